"""Consolidation: a leader merges its group into a larger one of the same task that serves its
data as well (migration/consolidation.py has the rule; this runs it over the network).

``Merger`` runs both for ``Node``. The leader tells each member to join the target
(``n.split`` with ``join``, the message splits already use), then moves itself; members that
cannot get in find a group as after any refused move.

A node that left a leaderless group (``_watch_group``: most of it died or was cut off, as on
the small side of a partition) remembers it, and goes back as soon as that group's leader
answers again, without waiting for the measurements: its data was served there before the
cut, which is what the measurements would establish. A group it founded goes back whole, and
only into a group that outranks it (the total order: two groups never merge into each other
at once); a node that joined another group goes back alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import events
from ..aio import TaskOwner, loop_time
from ..dht import DhtNode, fetch_advert, fetch_adverts
from ..errors import ChannelError, MyceliumError, RemoteError
from ..fl.client import ClientRunner
from ..group.member import GroupMember
from ..group.transport import ChannelServer
from ..migration.consolidation import GroupView, MergePolicy, merge_candidates
from ..migration.measure import fetch_model, score
from ..records import GroupAdvert
from .choosing import joinable
from .config import NodeConfig
from .membership import Emit, Membership
from .moving import Mover

log = logging.getLogger(__name__)
T = TypeVar("T")

RETURN_WINDOW = 300.0  # s: how long a group founded by a regroup looks for the group it left
# s: the return check's model fetch. A failed check is tried again one merge interval later;
# a longer wait only delays the return (a small model crosses a LAN in milliseconds).
RETURN_PROBE_TIMEOUT = 2.0
# s: a group that refused our move (an advert lags: it filled up meanwhile) is not tried again
# for this long, or a leader refused re-founds a group and asks again every few seconds
REFUSED_BACKOFF = 10.0


async def _unless_failed(check: Awaitable[T], what: str) -> T | None:
    """``check``'s result, or None if it failed (logged): nothing a peer sends may end a
    watch for good."""
    try:
        return await check
    except (MyceliumError, OSError) as exc:
        log.debug("%s failed: %s", what, exc)
    except Exception:
        log.exception("%s failed", what)
    return None


class Merger:
    """Merging small groups into larger ones, and going back after a regroup."""

    def __init__(
        self,
        identity_key: bytes,
        config: NodeConfig,
        membership: Membership,
        mover: Mover,
        dht: DhtNode,
        channels: ChannelServer,
        runner: ClientRunner,
        emit: Emit,
        tasks: TaskOwner,
    ) -> None:
        self.me = identity_key
        self.config = config
        self.membership = membership
        self.mover = mover
        self.dht = dht
        self.channels = channels
        self.runner = runner
        self.emit = emit
        self.tasks = tasks
        self._refused: dict[str, float] = {}  # group id -> until when we do not try it again

    def _refused_now(self, group_id: str) -> bool:
        """Whether ``group_id`` refused a move of ours less than ``REFUSED_BACKOFF`` s ago."""
        return self._refused.get(group_id, 0.0) > loop_time()

    async def _move(self, target: GroupAdvert, reason: str) -> None:
        """``mover.move`` (under ``membership.change``), remembering a refusal."""
        await self.mover.move(target, reason, chosen=False)
        group = self.membership.group
        if group is None or group.group_id != target.group_id:
            now = loop_time()  # expired entries go first: the map stays a few entries long
            self._refused = {g: t for g, t in self._refused.items() if t > now}
            self._refused[target.group_id] = now + REFUSED_BACKOFF

    async def watch_merges(self, group: GroupMember) -> None:
        """While leading an open group: look for a group to merge into every two heartbeats."""
        if group.info.policy != "open":
            return
        policy = MergePolicy()
        while True:
            await asyncio.sleep(self.config.group.merge_interval)
            if self.membership.group is not group or not group.is_leader:
                return
            found = await _unless_failed(
                self._merge_check(group, policy), f"merge check of {group.group_id}"
            )
            if found is not None:  # not in this task: moving stops leading, and with it us
                self.tasks.spawn(self._merge_into(group, *found), name="merge")
                return

    async def _merge_check(
        self, group: GroupMember, policy: MergePolicy
    ) -> tuple[GroupAdvert, str] | None:
        return await self._return_target(group) or await self._merge_target(group, policy)

    async def _return_target(self, group: GroupMember) -> tuple[GroupAdvert, str] | None:
        """The group this one's founder left when it could reach no leader, once that group's
        leader answers again, outranks this group and has room for all of it; else None."""
        size = len(group.roster)
        mine = GroupView(group.group_id, size, group.info.capacity - size)

        def fits(advert: GroupAdvert) -> bool:  # it outranks us and has room for all of us
            view = GroupView(advert.group_id, advert.metrics.members, advert.free_slots)
            return bool(merge_candidates(mine, [view]))

        advert = await self._origin_back(group, fits)
        if advert is None:
            return None
        return advert, f"back to {advert.name}, the group its founder left when cut off"

    async def watch_return(self) -> None:
        """As a member of a group entered after a regroup, go back alone to the group we left
        once its leader answers and it has room for us. The leader of the group we are in
        takes the whole group back only where all of it fits, and it may be another domain's
        group that a node on our side of the cut founded: members need not wait for that."""
        while True:
            await asyncio.sleep(self.config.group.merge_interval)
            group = self.membership.group
            if group is None or group.is_leader:
                continue
            advert = await _unless_failed(
                self._origin_back(group, lambda a: a.free_slots > 0),
                f"return check from {group.group_id}",
            )
            if advert is None:
                continue
            try:
                async with self.membership.change:
                    if self.membership.group is not group or group.is_leader:
                        continue  # elected meanwhile: a leader takes its whole group back
                    await self._move(
                        advert, f"back to {advert.name}, the group we left when cut off"
                    )
            except Exception:  # a failed move must not end the watch
                log.exception("going back to %s failed", advert.name)

    async def _origin_back(
        self, group: GroupMember, fits: Callable[[GroupAdvert], bool]
    ) -> GroupAdvert | None:
        """The advert of the group we left in a regroup, if we still sit in the group we
        entered then, and the group left is advertised, joinable, ``fits`` and its leader
        answers (it serves its model: the cut has healed) and was a member when we left;
        else None. Forgotten after ``RETURN_WINDOW``."""
        origin = self.membership.origin
        if origin is None or origin.entered != group.group_id:
            return None
        if loop_time() - origin.at > RETURN_WINDOW:
            self.membership.origin = None
            return None
        if self._refused_now(origin.left):
            return None
        advert = await fetch_advert(self.dht, origin.left)
        if advert is None or not joinable(advert) or not fits(advert):
            return None
        if advert.leader_key not in origin.roster:
            log.debug("the advert of %s names a leader we never knew there", advert.name)
            return None
        try:  # an open group serves its model to anyone
            timeout = min(self.config.fl.reply_timeout, RETURN_PROBE_TIMEOUT)
            await fetch_model(self.channels, advert, timeout, self.membership.model_cap)
        except (ChannelError, RemoteError) as exc:
            log.debug("the group %s left is not reachable yet: %s", advert.name, exc)
            if isinstance(exc, ChannelError) and (
                stale := self.channels.channel(advert.leader_key)
            ):
                # a channel from before the cut may look open while TCP backs off its
                # retransmissions for many seconds after the heal: dial afresh next time
                await stale.close()
            return None
        return advert

    async def _merge_target(
        self, group: GroupMember, policy: MergePolicy
    ) -> tuple[GroupAdvert, str] | None:
        size = len(group.roster)
        mine = GroupView(group.group_id, size, group.info.capacity - size)
        adverts = {
            a.group_id: a
            for a in await fetch_adverts(self.dht, self.config.task)
            if joinable(a) and a.group_id != group.group_id and not self._refused_now(a.group_id)
        }
        views = [
            GroupView(a.group_id, a.metrics.members, a.free_slots, term=a.term)
            for a in adverts.values()
        ]
        candidates = merge_candidates(mine, views)
        if not candidates:
            policy.reset()
            return None
        now = loop_time()
        own: float | None = None
        for view in policy.to_measure(candidates, now):  # the best that serves us as well
            target = adverts[view.group_id]
            try:
                model = await fetch_model(
                    self.channels, target, self.config.fl.reply_timeout, self.membership.model_cap
                )
            except (ChannelError, RemoteError) as exc:
                log.debug("cannot measure %s's model: %s", target.name, exc)
                continue
            if own is None:
                own = await score(self.runner, group.model)
            measured = await score(self.runner, model)
            rounds = min(group.model.round, model.round)
            merge, reason = policy.decide(
                own, target.group_id, measured, rounds=rounds, now=now, term=view.term
            )
            log.debug("group %s: merge check: %s", group.group_id, reason)
            if merge:
                return target, reason
            if policy.confirming(target.group_id):
                return None  # it would do: the next check confirms it (or not)
        return None

    async def _merge_into(self, group: GroupMember, target: GroupAdvert, reason: str) -> None:
        async with self.membership.change:
            if self.membership.group is not group or not group.is_leader:
                return
            members = [m for m in group.members() if m.key != self.me]
            self.emit(
                events.MERGE,
                f"merging group {group.info.name} ({len(members) + 1} members) into "
                f"{target.name}: {reason}",
                group=group.info.name,
                group_id=group.group_id,
                to=target.name,
                to_id=target.group_id,
                reason=reason,
            )
            order: dict[str, Any] = {
                "gid": group.group_id,
                "term": group.term,
                "join": target.group_id,
                "addr": list(target.leader),
                "key": target.leader_key,
                "reason": "merge",
            }
            gone = set()
            for member in members:
                with contextlib.suppress(ChannelError, RemoteError):
                    await group.channels.request(
                        member.addr,
                        member.key,
                        "n.split",
                        order,
                        timeout=self.config.fl.reply_timeout,
                    )
                    gone.add(member.key)
            # only those that obeyed: the others stay, and elect a leader of their own when
            # ours leaves (its g.resign hands them the roster)
            group.remove_members(gone)
            await self._move(target, reason)
