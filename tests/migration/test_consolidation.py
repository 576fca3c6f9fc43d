"""The merge rule: which group may merge into which, and when measurements allow it."""

from __future__ import annotations

import itertools
import random

from mycelium_p2p.migration.consolidation import (
    GroupView,
    MergeConfig,
    MergePolicy,
    merge_candidates,
    outranks,
)


def test_two_groups_never_merge_into_each_other() -> None:
    rng = random.Random(3)
    groups = [
        GroupView(f"{rng.getrandbits(64):016x}", rng.randint(1, 6), 10) for _ in range(40)
    ] + [GroupView("00000000000000aa", 3, 10), GroupView("00000000000000ab", 3, 10)]
    for a, b in itertools.permutations(groups, 2):
        assert not (outranks(a, b) and outranks(b, a)), (a, b)
        if a.group_id != b.group_id:
            assert outranks(a, b) or outranks(b, a)  # a total order: one of them moves
    # as many members: the smaller id absorbs the other
    small, large = GroupView("00000000000000aa", 3, 7), GroupView("00000000000000ab", 3, 7)
    assert outranks(small, large) and not outranks(large, small)


def test_candidates_outrank_us_have_room_for_all_of_us_and_are_open() -> None:
    mine = GroupView("5" * 16, 3, 7)
    others = [
        GroupView("1" * 16, 5, 2),  # larger but no room for 3
        GroupView("2" * 16, 4, 6),  # fits
        GroupView("3" * 16, 8, 2, open=False),  # invite-only
        GroupView("4" * 16, 2, 8),  # smaller: it comes to us, not we to it
        GroupView("6" * 16, 6, 4),  # the largest that fits
        mine,
    ]
    assert [g.group_id for g in merge_candidates(mine, others)] == ["6" * 16, "2" * 16]
    assert merge_candidates(GroupView("0" * 16, 9, 1), others) == []


def test_a_merge_needs_models_that_serve_us_as_well_in_checks_in_a_row() -> None:
    policy = MergePolicy(MergeConfig(tolerance=0.02, confirmations=2))
    assert policy.decide(None, "t", 0.9, rounds=9)[0] is False  # nothing merges on faith
    assert policy.decide(0.9, "t", 0.9, rounds=2)[0] is False  # young models tell nothing
    assert policy.decide(0.9, "t", None, rounds=9)[0] is False
    assert policy.decide(0.90, "t", 0.89, rounds=9) == (False, "t would do; confirming (1/2)")
    merge, why = policy.decide(0.90, "t", 0.95, rounds=9)
    assert merge and "serves our data as well" in why
    # other data: a model far worse on ours never merges, however often it is measured
    for _ in range(5):
        merge, why = policy.decide(0.92, "rotated", 0.31, rounds=9)
        assert not merge and "worse" in why
    # a worse measurement breaks the streak
    assert policy.decide(0.9, "t", 0.9, rounds=9)[0] is False
    assert policy.decide(0.9, "t", 0.5, rounds=9)[0] is False
    assert policy.decide(0.9, "t", 0.9, rounds=9)[0] is False
    assert policy.decide(0.9, "t", 0.9, rounds=9)[0] is True


def test_a_group_measured_worse_is_passed_over_for_a_while_and_the_next_one_measured() -> None:
    policy = MergePolicy(MergeConfig(confirmations=2, measure_per_check=2, recheck_after=30.0))
    other_data, ours, third = (
        GroupView("1" * 16, 5, 1),
        GroupView("2" * 16, 2, 4),
        GroupView("3" * 16, 2, 4),
    )
    candidates = [other_data, ours, third]
    assert policy.to_measure(candidates, now=0.0) == [other_data, ours]  # at most 2 a check
    assert policy.decide(0.9, other_data.group_id, 0.2, rounds=9, now=0.0)[0] is False
    assert policy.decide(0.9, ours.group_id, 0.9, rounds=9, now=0.0)[0] is False  # 1/2
    assert policy.confirming(ours.group_id)
    assert policy.to_measure(candidates, now=1.0) == [ours, third]  # the worse one waits
    # measured again once its wait is over, and worse again: our streak is not broken
    assert policy.to_measure(candidates, now=31.0)[0] == other_data
    assert policy.decide(0.9, other_data.group_id, 0.2, rounds=9, now=31.0)[0] is False
    assert policy.decide(0.9, ours.group_id, 0.9, rounds=9, now=31.0)[0] is True


def test_a_group_that_elected_a_new_leader_is_measured_again_at_once() -> None:
    policy = MergePolicy(MergeConfig(recheck_after=10.0))
    group = GroupView("1" * 16, 5, 1, term=3)
    assert policy.decide(0.9, group.group_id, 0.2, rounds=9, now=0.0, term=3)[0] is False
    assert policy.to_measure([group], now=5.0) == []
    # its members that trained other data moved out and another leader was elected
    assert policy.to_measure([GroupView("1" * 16, 4, 2, term=4)], now=5.0) != []
