"""Votes on disk (``VoteJournal``): a member that restarts does not vote twice in a term."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mycelium_p2p.group.election import ElectionState
from mycelium_p2p.group.votes import KEEP, VoteJournal

A, B = b"a" * 32, b"b" * 32


def grant(state: ElectionState, term: int, candidate: bytes) -> tuple[bool, str]:
    return state.grant(term, candidate, candidate_round=0, my_round=0, lease_lapsed=True)


def test_a_restarted_member_refuses_a_second_candidate_in_a_term_it_voted_in(
    tmp_path: Path,
) -> None:
    journal = VoteJournal(tmp_path / "g.votes")
    before = ElectionState.restored(journal)
    assert grant(before, 5, A) == (True, "granted")
    after = ElectionState.restored(VoteJournal(tmp_path / "g.votes"))  # memory lost, disk kept
    assert grant(after, 5, B) == (False, "voted for another candidate in term 5")
    assert not after.stand(5, B)  # nor may it vote for itself in that term
    assert grant(after, 5, A)[0]  # the same vote, again
    assert grant(after, 6, B) == (True, "granted")
    assert ElectionState.restored(journal).votes == {5: A, 6: B}


def test_without_a_journal_a_restart_forgets(tmp_path: Path) -> None:
    # what a node without a data directory does: the case the journal exists for
    assert grant(ElectionState(), 5, A)[0] and grant(ElectionState(), 5, B)[0]


def test_a_candidate_s_own_vote_is_kept_too(tmp_path: Path) -> None:
    journal = VoteJournal(tmp_path / "g.votes")
    assert ElectionState.restored(journal).stand(3, A)
    assert grant(ElectionState.restored(journal), 3, B)[0] is False


def test_only_the_newest_terms_are_kept_and_older_ones_are_refused(tmp_path: Path) -> None:
    journal = VoteJournal(tmp_path / "g.votes")
    state = ElectionState.restored(journal)
    for term in range(1, 30):
        assert grant(state, term, A)[0]
    assert sorted(journal.load()) == list(range(30 - KEEP, 30))
    assert (tmp_path / "g.votes").stat().st_size < 512
    again = ElectionState.restored(journal)
    assert grant(again, 29 - KEEP, B) == (
        False,
        f"term {29 - KEEP} is older than the votes I kept (restarted)",
    )
    assert grant(again, 30, B)[0]


@pytest.mark.parametrize(
    "blob",
    [b"", b"\xff\x00garbage", b"\x81\x05\xc4\x03abc", b"\x81\xa1x\xc4\x20" + A, b"\x00" * 5000],
)
def test_a_file_that_is_not_a_journal_restores_nothing_and_says_so(
    tmp_path: Path, blob: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.votes"
    path.write_bytes(blob)
    with caplog.at_level(logging.WARNING, logger="mycelium_p2p.group.votes"):
        assert VoteJournal(path).load() == {}
    assert "not valid" in caplog.text


def test_a_vote_that_cannot_be_recorded_is_not_cast(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere: make the journal's path a directory instead
        (tmp_path / "g.votes").mkdir()
    else:
        tmp_path.chmod(0o500)
    state = ElectionState.restored(VoteJournal(tmp_path / "g.votes"))
    try:
        assert grant(state, 4, A) == (False, "cannot record my vote")
        assert not state.stand(4, B)
        assert state.votes == {} and state.term == 0
    finally:
        tmp_path.chmod(0o700)
