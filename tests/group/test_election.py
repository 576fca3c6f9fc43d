"""The election rules, without a network."""

from __future__ import annotations

from mycelium_p2p.group.election import ElectionState, candidate_rank, electorate, majority

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_majorities_and_electorates() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert electorate([A, B, C], old_leader=A) == {B, C}
    assert electorate([A], old_leader=None) == {A}


def test_candidates_stand_in_one_order_everyone_computes() -> None:
    assert [candidate_rank(k, {C, A, B}) for k in (A, B, C)] == [0, 1, 2]
    assert candidate_rank(b"z" * 32, {A}) == 1


def test_one_vote_per_term_and_never_backwards() -> None:
    voter = ElectionState(term=3)
    kw = {"candidate_round": 5, "my_round": 5, "lease_lapsed": True}
    assert voter.grant(4, A, **kw)[0]
    assert voter.grant(4, A, **kw)[0]  # a retry of the same request: same answer
    assert not voter.grant(4, B, **kw)[0]  # concurrent candidate, same term
    assert not voter.grant(3, B, **kw)[0]  # an older term
    assert voter.grant(5, B, **kw)[0]  # a newer one
    assert voter.term == 5


def test_no_vote_for_an_older_model_or_while_the_leader_lives() -> None:
    voter = ElectionState(term=1)
    granted, why = voter.grant(2, A, candidate_round=4, my_round=5, lease_lapsed=True)
    assert not granted and "round" in why
    granted, why = voter.grant(2, A, candidate_round=5, my_round=5, lease_lapsed=False)
    assert not granted and "alive" in why
    assert voter.term == 1  # refusals change nothing


def test_a_failed_candidacy_does_not_raise_the_candidates_term() -> None:
    me = ElectionState(term=2)
    assert me.stand(3, A)
    assert me.term == 2  # a partitioned candidate cannot disrupt the group later
    assert not me.grant(3, B, candidate_round=0, my_round=0, lease_lapsed=True)[0]
    assert not me.stand(2, A)
    me.won(3)
    assert me.term == 3
