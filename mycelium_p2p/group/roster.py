"""Who is in a group: quorum, dropping the silent, telling members (``RosterUpkeep``).

A leader changes the roster only while a majority of it answers, and sends every change to the
members at once: members elect on the roster they hold, and two members holding different
rosters can count two different majorities. So it changes one member at a time, and makes the
next change only once the last one is known (``settled``): the majorities of two rosters one
change apart always meet, those of rosters two changes apart need not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from ..aio import TaskOwner
from ..errors import OwnerClosed
from .authority import Authority, may_be_deposed
from .election import majority
from .link import Link
from .seat import Seat
from .state import Member

log = logging.getLogger(__name__)


class RosterUpkeep:
    """The roster rules: kept in the seat, changed by a leader with a majority, adopted by a
    member from its proven leader."""

    def __init__(self, seat: Seat, link: Link, authority: Authority, tasks: TaskOwner) -> None:
        self.seat = seat
        self.link = link
        self.authority = authority
        self.tasks = tasks
        self._quorum_lost_at: float | None = None
        self._roster_dirty = False
        self._dropped: set[bytes] = set()  # see former_majority
        self._roster_push: asyncio.Task[None] | None = None

    def has_quorum(self) -> bool:
        """A majority of the roster answered within the lease: changes to it may be made.

        Counted among the members the others know of (``Member.confirmed``), as acks are: a
        leader cut off from its group could otherwise admit newcomers and count them as the
        majority that lets it drop the members that elected a new leader meanwhile.
        """
        seat = self.seat
        cutoff = seat.now() - seat.config.lease_timeout
        known = [m for k, m in seat.roster.items() if k != seat.me and m.confirmed]
        heard = 1 + sum(1 for m in known if m.last_seen >= cutoff)
        return heard >= majority(1 + len(known))

    def settled(self) -> bool:
        """As leader: whether the last roster change is known widely enough to make another.

        Members elect on the roster they hold, and the electorates of two rosters one change
        apart (a member more or less) have majorities that always meet; two changes apart they
        need not: with {L, A, B, C, D, E}, a leader that drops D and E at once, its roster
        reaching A and B only, lets A win a term with B (2 of {A, B, C}) and C the same term
        with D and E (3 of {A, B, C, D, E}). A change is known once a majority of the roster
        before it holds the roster after it: the members that missed it can then no longer
        elect anyone (voters refuse a candidate whose roster is older than theirs), so only
        the rosters before and after the next change are left to count majorities on. That
        is, no member dropped is still counted in ``former_majority``, and every newcomer is
        ``Member.confirmed``. (A member that left, or was sent elsewhere, votes no more: taking
        it off the roster needs no waiting.)
        """
        self._dropped -= self.seat.roster.keys()  # readmitted since
        return not self._dropped and all(m.confirmed for m in self.seat.roster.values())

    async def confirm_quorum(self) -> bool:
        """As leader: whether a majority of the roster (its confirmed members) acknowledges
        our term now, in a round trip we start. Heartbeats do not show that: a leader that was
        frozen or cut off reads, when it wakes, heartbeats its members sent before they elected
        another leader. A member that proves a newer term makes us step down (False)."""
        seat = self.seat
        if not seat.is_leader:
            return False
        term = seat.term
        known = [m for m in seat.members() if m.key != seat.me and m.confirmed]
        named = set(seat.roster)
        dropped, former = set(self._dropped), self.former_majority()
        header = {
            "term": term,
            "cert": seat.cert_blob,
            "roster": seat.roster_wire(),
            "rv": seat.roster_version,
        }
        asks = {
            asyncio.ensure_future(
                self.link.request(
                    m.key, m.addr, "g.roster", header, timeout=seat.config.lease_timeout
                )
            ): m
            for m in known
        }
        # done once enough acks are in (a majority, and what settles the last drop): a dead
        # member not dropped yet would hold every admission (one at a time) its whole timeout
        needed = max(majority(1 + len(known)), former)
        acks, pending = 1, set(asks)
        try:
            while pending and acks < needed:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for ask in done:
                    if ask.cancelled():
                        continue
                    reply: Any = ask.exception() or ask.result()
                    if (
                        may_be_deposed(reply)
                        and seat.is_leader
                        and await self.authority.heed_stale_term(asks[ask])
                    ):
                        return False
                    acks += not isinstance(reply, BaseException)
        finally:
            for ask in pending:
                ask.cancel()
            await asyncio.gather(*asks, return_exceptions=True)  # every outcome retrieved
        if not (seat.is_leader and seat.term == term and acks >= majority(1 + len(known))):
            return False
        # the roster we sent is now known as a push would make it (see ``settled``)
        if acks >= former:
            self._dropped -= dropped
        for key in named & seat.roster.keys():
            seat.roster[key].confirmed = True
        return True

    def drop_silent_members(self) -> None:
        """Drop members silent beyond ``member_timeout``, but only while a majority still talks.

        A leader cut off from most of its group (a partition) must not shrink the roster to the
        members it still reaches: that would let it commit rounds on its side while the other
        side elects a leader of its own. Instead it keeps the roster (so it commits nothing)
        and, once that has lasted a lease, steps down.

        One member at a time, the longest silent first, once the last change is known
        (``settled``): the next upkeep drops the next one.
        """
        seat = self.seat
        now = seat.now()
        cutoff = now - seat.config.member_timeout
        silent = [k for k, m in seat.roster.items() if k != seat.me and m.last_seen < cutoff]
        # Count only members heard within a lease as present: after a partition the members on
        # the far side fall silent at slightly different moments, and dropping them one by one,
        # each time with a "majority" of what is left, is how a minority shrinks into a majority.
        if not silent or self.has_quorum():
            if silent and self.settled():
                key = min(silent, key=lambda k: (seat.roster[k].last_seen, k))
                log.info("group %s: member %s went silent", seat.group_id, key.hex()[:8])
                del seat.roster[key]
                self._dropped.add(key)
                self.roster_changed()
            self._quorum_lost_at = None
            return
        if self._quorum_lost_at is None:
            self._quorum_lost_at = now
        elif now - self._quorum_lost_at > seat.config.lease_timeout:
            log.warning(
                "group %s: %d of %d members silent; stepping down",
                seat.group_id,
                len(silent),
                len(seat.roster),
            )
            self._quorum_lost_at = None
            seat.resign()

    def former_majority(self) -> int:
        """As leader: the acks a commit needs in all: a majority of the roster, counted with
        the members dropped as silent until a majority of it holds the roster without them.

        A member that missed the drop elects on the roster that still names them, without the
        leader: the dropped members, alive again, can make its majority with members that
        missed our last rounds. Its majority must meet our commits' (Raft's joint majority).
        """
        self._dropped -= self.seat.roster.keys()  # readmitted since
        return majority(len(self.seat.roster) + len(self._dropped))

    def took_office(self) -> None:
        """We lead a new term: the last leader's lost quorum and dropped members are not ours."""
        self._quorum_lost_at = None
        self._dropped.clear()  # candidates of the next term hold a roster of this one

    def adopt_roster(self, wire: Any, version: tuple[int, int]) -> None:
        """Take the roster our proven leader sent (already checked by ``messages``), unless we
        hold a newer one: votes compare roster versions, so a member must never go back."""
        seat = self.seat
        if tuple(version) < seat.roster_version:
            return
        seat.roster_version = (version[0], version[1])
        roster = {}
        now = seat.now()
        for key, host, port, round_ in wire:
            known = seat.roster.get(key)
            roster[key] = Member(key, (host, port), round_, known.last_seen if known else now)
        roster[seat.me] = Member(seat.me, seat.my_addr, seat.model.round)
        seat.roster = roster

    def roster_changed(self) -> None:
        """As leader: send the members the new roster now, not at their next heartbeat. A member
        standing for election with a roster that lacks the newest members counts its majority
        among too few voters, and two candidates can both win a term."""
        seat = self.seat
        if not seat.is_leader:
            return
        made, changes = seat.roster_version
        seat.roster_version = (seat.term, changes + 1 if made == seat.term else 1)
        self._roster_dirty = True
        if self._roster_push is None or self._roster_push.done():
            with contextlib.suppress(OwnerClosed):
                self._roster_push = self.tasks.spawn(self._push_roster(), name="roster-push")

    def remove_members(self, left: Iterable[bytes]) -> None:
        """As leader: take members off the roster that obeyed an order to go elsewhere (a
        split, a merge): they left, and vote here no more, so it waits for nothing.

        Only those: a member the order did not reach still follows us on the roster that names
        it, and votes on it. Taking several such members off at once is several changes at
        once (see ``settled``): with {L, A, F, U, V, W} and a split whose order reached F
        only, L's roster {L, A} let A win a term alone once L froze, and U the same term with
        V and W (3 of {A, F, U, V, W}). They stay: a member the order did reach leaves with
        ``g.leave``, and one that died is dropped as silent members are.
        """
        for key in left:
            if key != self.seat.me:
                self.seat.roster.pop(key, None)
        self.roster_changed()

    async def _push_roster(self) -> None:
        seat = self.seat
        while self._roster_dirty and seat.is_leader:
            self._roster_dirty = False
            header = {
                "term": seat.term,
                "cert": seat.cert_blob,
                "roster": seat.roster_wire(),
                "rv": seat.roster_version,
            }
            targets = [m for m in seat.members() if m.key != seat.me]
            former = self.former_majority()
            dropped = set(self._dropped)
            replies = await asyncio.gather(
                *(self.link.request(m.key, m.addr, "g.roster", header) for m in targets),
                return_exceptions=True,
            )
            told = [
                m for m, r in zip(targets, replies, strict=True) if not isinstance(r, BaseException)
            ]
            if 1 + len(told) >= former:  # a majority of the former roster holds this one
                self._dropped -= dropped
            known = sum(1 for m in targets if m.confirmed)
            if 1 + sum(1 for m in told if m.confirmed) >= majority(1 + known):
                for member in targets:  # a majority knows them now: their acks count
                    member.confirmed = True
                if self._dropped & dropped and seat.is_leader:
                    self._roster_dirty = True  # not yet a majority of the former roster
                    await asyncio.sleep(min(0.5, seat.config.heartbeat_interval))
            elif seat.is_leader:
                self._roster_dirty = True  # try again soon (a joiner may not be ready yet)
                await asyncio.sleep(min(0.5, seat.config.heartbeat_interval))
