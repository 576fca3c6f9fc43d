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


def test_a_restarted_member_stands_past_the_terms_it_voted_in_for_others(tmp_path: Path) -> None:
    journal = VoteJournal(tmp_path / "g.votes")
    before = ElectionState.restored(journal)
    for term in range(44, 52):
        assert grant(before, term, A)[0]
    after = ElectionState.restored(journal)
    after.observe(40)  # rejoined a group whose leader is in term 40
    term = after.next_term(B, highest=0)
    assert term == 52 and after.stand(term, B)  # not 41, which it could never stand in


def test_a_candidate_retries_its_own_term_but_not_one_it_gave_away() -> None:
    state = ElectionState(term=4)
    assert state.stand(5, A)  # lost: no one answered
    assert state.next_term(A, highest=4) == 5  # its own vote in 5 does not push it on
    assert state.next_term(B, highest=4) == 6  # B: that vote went to another candidate


def test_a_vote_moves_the_term_at_most_max_term_step() -> None:
    from mycelium_p2p.group.election import MAX_TERM_STEP

    state = ElectionState(term=10)
    assert grant(state, 2**53, A)[0] is False and state.term == 10  # no pinning at the top
    assert grant(state, 10 + MAX_TERM_STEP, A)[0]


def test_a_term_whose_vote_is_forgotten_is_never_voted_in_again() -> None:
    state = ElectionState(term=10)
    assert state.stand(11, A)
    assert state.stand(76, A)  # far on (a voter showed a high term): 11 is pruned ...
    assert 11 not in state.votes
    assert grant(state, 11, B)[0] is False  # ... and may not be given to B
