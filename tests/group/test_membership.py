"""A leader's roster changes: who may be dropped, and when a cut-off leader gives up."""

from __future__ import annotations

import time

from mycelium_p2p.group.member import GroupMember
from mycelium_p2p.group.state import GroupConfig, Member
from mycelium_p2p.identity import Identity
from tests.helpers.groups import info_for


def leader_with(ages: list[float]) -> GroupMember:
    """A leader whose other members were last heard ``ages`` seconds ago (heartbeat 0.5 s:
    lease 1.25 s, member timeout 2.5 s)."""
    info = info_for(Identity.generate())
    group = GroupMember(
        Identity.generate(), None, info, ("127.0.0.1", 1), GroupConfig(heartbeat_interval=0.5)
    )
    group.seat.role = "leader"
    group.pushes = []  # type: ignore[attr-defined]
    group.upkeep.roster_changed = lambda: group.pushes.append(len(group.roster))  # type: ignore[method-assign]
    now = time.monotonic()
    for i, age in enumerate(ages):
        key = bytes([i + 1]) * 32
        group.roster[key] = Member(key, ("127.0.0.1", 2 + i), 0, now - age)
    return group


def test_dead_members_are_dropped_while_a_majority_answers() -> None:
    group = leader_with([0.1, 0.2, 0.3, 2.6, 2.7])  # 4 of 6 fresh
    group.upkeep.drop_silent_members()
    assert len(group.roster) == 5 and group.is_leader  # one at a time: the longest silent
    assert bytes([5]) * 32 not in group.roster
    assert group.pushes == [5]  # the members hear of it at once
    group.upkeep.drop_silent_members()
    assert group.pushes == [5]  # not before most of the roster that named it has heard
    group.upkeep._dropped.clear()  # the push reached them
    group.upkeep.drop_silent_members()
    assert len(group.roster) == 4 and group.pushes == [5, 4]


def test_half_the_group_falling_silent_one_by_one_is_not_dropped_one_by_one() -> None:
    # a partition: the far half stopped answering at the same moment, but their last
    # heartbeats were a little apart, so one of them crosses the member timeout first
    group = leader_with([0.1, 0.2, 2.6, 2.3, 2.1])  # 3 of 6 fresh
    group.upkeep.drop_silent_members()
    assert len(group.roster) == 6  # not even the first one: that would make 3 a majority of 5
    assert group.pushes == []


def test_a_leader_without_a_majority_steps_down_after_a_lease() -> None:
    group = leader_with([0.1, 2.6, 2.7])
    stepped = []
    group.on_follower = lambda: stepped.append(True)
    group.upkeep.drop_silent_members()
    assert group.is_leader  # not yet: a moment's silence is not a partition
    group.upkeep._quorum_lost_at = time.monotonic() - 2.0  # the loss has lasted beyond a lease
    group.upkeep.drop_silent_members()
    assert not group.is_leader and stepped and len(group.roster) == 4


def test_newcomers_the_others_never_heard_of_do_not_keep_a_cut_off_leader_in_office() -> None:
    # The members that elected the leader fell silent (they elected another one), but two
    # newcomers it admitted meanwhile, that no other member has heard of, heartbeat it: 3 of
    # 5 "answered". Counted, they would let it drop the real members and commit rounds with
    # the newcomers alone, a fork the other side's certificate proves nothing to. Like acks,
    # quorum counts only the members the others know of: 1 of 3.
    group = leader_with([2.6, 2.7, 0.1, 0.2])
    for i in (3, 4):
        group.roster[bytes([i]) * 32].confirmed = False
    group.upkeep.drop_silent_members()
    assert len(group.roster) == 5 and group.pushes == []
    group.upkeep._quorum_lost_at = time.monotonic() - 2.0  # the loss has lasted beyond a lease
    group.upkeep.drop_silent_members()
    assert not group.is_leader and len(group.roster) == 5
