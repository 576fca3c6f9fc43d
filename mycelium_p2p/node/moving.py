"""Moving between groups: a node's migration checks, moves, splits, regroups and merges.

``MovingMixin`` is part of ``Node`` (it uses the node's group, runner, DHT, channels, config and
event hook); it lives here because moving is its own job next to running a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..addresses import WireAddress
from ..dht import fetch_advert, fetch_adverts, publish_advert
from ..errors import MyceliumError
from ..group.member import GroupMember, JoinRefused
from ..group.state import ModelSnapshot
from ..group.transport import Channel, ChannelError, RemoteError, Reply
from ..migration.measure import fetch_model, score
from ..migration.split import SplitPolicy
from ..records import GroupAdvert, GroupMetrics
from ..records.leadership import MAX_TERM, GroupId

log = logging.getLogger(__name__)


def joinable(advert: GroupAdvert) -> bool:
    """Open, with room, and not dissolved (a leader that left alone advertises 0 members)."""
    return advert.policy == "open" and advert.free_slots > 0 and advert.metrics.members > 0


def rank_joinable(adverts: list[GroupAdvert]) -> list[GroupAdvert]:
    """Joinable groups in the order a node without measurements tries them: by neutral facts
    (the most members first, then the group id), never by what an advert claims to score."""
    return sorted(
        (a for a in adverts if joinable(a)), key=lambda a: (-a.metrics.members, a.group_id)
    )


class MovingMixin:
    """Migration and splitting, for ``Node``."""

    # attributes provided by Node
    group: GroupMember | None
    moves: list[tuple[float, str, str]]
    emit: Callable[..., None]
    _leave_group: Callable[[], Awaitable[None]]
    _split_policies: dict[str, SplitPolicy]

    # -- a ClientApp that keeps failing ---------------------------------------------------------

    def _on_app_failure(self, failures: Any) -> None:
        """Our ClientApp failed again: after ``max_app_failures`` calls in a row, leave the group
        for good (a member whose app always fails only holds its group hostage)."""
        limit = self.config.max_app_failures
        if limit <= 0 or failures.streak < limit or self.gave_up is not None:
            return
        self.gave_up = (
            f"this node's ClientApp failed {failures.streak} times in a row "
            f"(last: {failures.last}); left the group: fix the app and start the node again"
        )
        self.tasks.spawn(self._give_up(), name="give-up")

    async def _give_up(self) -> None:
        async with self._group_change:
            group = self.group
            if self._migrating is not None:
                self._migrating.cancel()
            await self._leave_group()
            self.emit(
                "app-failed",
                self.gave_up or "",
                group=group.info.name if group else None,
                group_id=group.group_id if group else None,
                error=self.runner.failures.last,
            )
            self.ended.set()

    # -- moving between groups --------------------------------------------------------------------

    def start_migration(self) -> None:
        """Evaluate candidate groups every ``group_evaluation_interval`` from now on."""
        self.config.migrate = True
        if self._migrating is None:
            self._migrating = self.tasks.spawn(self._migrate_loop(), name="migration")

    async def _migrate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.group_evaluation_interval)
            try:
                await self.evaluate_groups()
            except MyceliumError as exc:  # a peer went away mid-check: try again next time
                log.info("migration check failed: %s", exc)
            except Exception:  # nothing a peer sends may end migration for good
                log.exception("migration check failed")

    async def evaluate_groups(self) -> str:
        """Measure our group and a few candidates on our own data; move if it clearly pays.

        Returns the decision's reason. Advertised accuracy is never used to decide.
        """
        group = self.group
        if group is None:
            return "not in a group"
        own = await score(self.runner, group.model)
        if own is None:
            return "our group has no model yet"
        adverts = [
            a
            for a in await fetch_adverts(self.dht, self.config.task)
            if a.group_id != group.group_id and joinable(a)
        ]
        limit = self.migration.config.max_candidates
        candidates = self._rng.sample(adverts, min(limit, len(adverts)))
        scores: dict[str, float] = {}
        for advert in candidates:
            try:
                model = await fetch_model(self.channels, advert, self.config.reply_timeout)
                measured = await score(self.runner, model)
            except (ChannelError, RemoteError) as exc:
                log.info("cannot measure %s's model: %s", advert.name, exc)
                continue
            except Exception as exc:  # one candidate's bad model never ends the check
                log.warning(
                    "cannot measure %s's model: %s: %s", advert.name, type(exc).__name__, exc
                )
                continue
            if measured is not None:
                scores[advert.group_id] = measured
        decision = self.migration.decide(own, scores, time.monotonic())
        best = max(scores, key=scores.__getitem__, default=None)
        self.emit(
            "evaluated",
            f"own data: {own:.3f} in {group.info.name}"
            + (f", best candidate {scores[best]:.3f}" if best else ", no candidate")
            + f" ({decision.reason})",
            group=group.info.name,
            group_id=group.group_id,
            accuracy=own,
            best=scores[best] if best else None,
            best_id=best,
            candidates=len(scores),
        )
        if decision.move_to is not None and self.group is group:
            target = next(a for a in candidates if a.group_id == decision.move_to)
            threshold = self.migration.config.performance_threshold
            others = sorted(  # the other groups that also beat ours, best first
                (a for a in candidates if a is not target and a.group_id in scores),
                key=lambda a: -scores[a.group_id],
            )
            fallbacks = [a for a in others if scores[a.group_id] - own > threshold]
            await self.move_to(target, reason=decision.reason, fallbacks=fallbacks)
        return decision.reason

    async def _watch_group(self) -> None:
        """Leave a group that has had no leader for ``stall_timeout`` (most of it died or is cut
        off: it cannot elect one) for another group, or found one seeded with its model."""
        c = self.config
        limit = c.stall_timeout or 10 * c.heartbeat_interval
        while True:
            await asyncio.sleep(c.heartbeat_interval)
            group = self.group
            if group is None or group.leaderless_for() < limit:
                continue
            async with self._group_change:
                if self.group is not group:
                    continue
                self.emit(
                    "regroup",
                    f"group {group.info.name} has had no leader for {limit:g} s; "
                    "finding another group",
                    group=group.info.name,
                    group_id=group.group_id,
                )
                await self._leave_group()
                self.migration.settled(time.monotonic())
                await self._enter_group(
                    as_configured=False,
                    model=group.model,
                    origin=(group.group_id, frozenset(group.roster)),
                )

    async def _watch_rivals(self, group: GroupMember) -> None:
        """While leading: if the group's advert names another leader of a newer term whose
        certificate proves it to our roster, the group forked (we were cut off while the others
        elected): join that leader. An advert that proves nothing to us changes nothing."""
        me = self.identity.public_key
        while True:
            await asyncio.sleep(self.config.record_interval)
            if self.group is not group or not group.is_leader:
                return
            try:
                advert = await fetch_advert(self.dht, group.group_id)
            except (MyceliumError, OSError) as exc:
                log.debug("rival check of %s failed: %s", group.group_id, exc)
                continue
            if advert is None or advert.leader_key == me:
                continue
            if advert.term > group.term and advert.cert is not None and group.proves(advert.cert):
                self.tasks.spawn(self._yield(group, advert), name="yield")
                return

    async def _yield(self, group: GroupMember, advert: GroupAdvert) -> None:
        async with self._group_change:
            if self.group is not group or not group.is_leader:
                return
            self.emit(
                "merge",
                f"group {group.info.name} has another leader ahead of us (term {advert.term}, "
                f"round {advert.metrics.round}); joining it with our members",
                group=group.info.name,
                group_id=group.group_id,
                term=advert.term,
            )
            assert advert.cert is not None
            if not await group.yield_to(advert.leader, advert.cert) and group.is_leader:
                self._leading.append(  # it would not have us: lead on, and look again later
                    self.tasks.spawn(self._watch_rivals(group), name="rivals")
                )

    async def move_to(
        self,
        advert: GroupAdvert,
        reason: str = "",
        fallbacks: Sequence[GroupAdvert] = (),
        *,
        chosen: bool = True,
    ) -> None:
        """Leave our group cleanly and join ``advert``'s; if it cannot be joined, the first of
        ``fallbacks`` that can, else back to finding a group. A move we did not choose (a
        split, a merge) does not count toward the move cap."""
        async with self._group_change:
            await self._move_to(advert, reason, fallbacks, chosen=chosen)

    async def _move_to(
        self,
        advert: GroupAdvert,
        reason: str,
        fallbacks: Sequence[GroupAdvert] = (),
        *,
        chosen: bool = True,
    ) -> None:
        old = self.group
        if old is None:
            return
        old.closing = True  # a newcomer admitted now would be left behind, or lead it alone
        self._stop_leading()
        if old.is_leader and len(old.roster) == 1:
            # an empty group dissolves: say so now rather than when its advert expires
            self.rounds.clear()
            await publish_advert(self.dht, self._advert(members=0))
            if old.cert is not None:
                self._note_ended(old.group_id, old.cert.term)
        await self._leave_group()
        if chosen:
            self.migration.moved(time.monotonic())
        else:
            self.migration.settled(time.monotonic())
        for target in (advert, *fallbacks):
            self.emit(
                "moving",
                f"moving from {old.info.name} to {target.name}: {reason}",
                group=old.info.name,
                group_id=old.group_id,
                to=target.name,
                to_id=target.group_id,
                reason=reason,
            )
            try:
                await self._join(target)
            except Exception as exc:  # whatever one candidate does, we end up in a group
                if not isinstance(exc, (JoinRefused, ChannelError, RemoteError)):
                    log.warning("joining %s failed", target.name, exc_info=True)
                self.emit(
                    "refused",
                    f"{target.name} refused us ({type(exc).__name__}: {exc})",
                    group_id=target.group_id,
                    reason=str(exc),
                )
                continue
            self.moves.append((time.time(), old.group_id, target.group_id))
            return
        await self._enter_group(as_configured=False)

    def _split_policy(
        self, group: GroupMember
    ) -> Callable[[dict[bytes, Any], ModelSnapshot], None]:
        """The split check of one stint as ``group``'s leader. The splits it made lately
        outlive the stint (``SplitPolicy`` backs off after each); the streak of evidence
        does not."""
        kept = self._split_policies.get(group.group_id)
        policy = SplitPolicy(_splits=kept._splits if kept else [])
        self._split_policies = {group.group_id: policy}  # only the group we lead now

        def on_updates(updates: dict[bytes, Any], model: ModelSnapshot) -> None:
            group = self.group
            if not self.config.split or group is None or not group.is_leader:
                return
            leaving = policy.observe(updates, self.identity.public_key, time.monotonic())
            if leaving:
                self.tasks.spawn(self._split(group, leaving, model), name="split")

        return on_updates

    async def _split(self, group: GroupMember, leaving: set[bytes], model: ModelSnapshot) -> None:
        """Tell one side to found its own group (seeded with ``model``), and the rest to join it."""
        members = {m.key: m for m in group.members()}
        present = sorted(k for k in leaving if k in members)
        if not present:  # they all left on their own meanwhile
            return
        founder_key, *followers = present
        founder = members[founder_key]
        name = f"{group.info.name}-{len(self.moves) + len(self.rounds)}"
        self.emit(
            "split",
            f"splitting {group.info.name}: {len(leaving)} member(s) pull elsewhere; "
            f"they found {name}",
            group=group.info.name,
            group_id=group.group_id,
            leaving=len(leaving),
            to=name,
        )
        header, _ = await group.channels.request(
            founder.addr,
            founder.key,
            "n.split",
            {"gid": group.group_id, "term": group.term, "found": name},
            timeout=self.config.reply_timeout,
        )
        try:
            founded = msgspec.convert(header, SplitFounded, strict=True)
        except msgspec.ValidationError as exc:  # the rest stay with us: nothing to join
            log.warning("split of %s: the founder's reply is malformed: %s", name, exc)
            return
        for key in followers:
            member = members[key]
            with contextlib.suppress(ChannelError, RemoteError):
                await group.channels.request(
                    member.addr,
                    member.key,
                    "n.split",
                    {
                        "gid": group.group_id,
                        "term": group.term,
                        "join": founded.group_id,
                        "addr": list(founded.addr),
                        "key": founder.key,
                    },
                    timeout=self.config.reply_timeout,
                )
        group.remove_members(leaving)

    async def _on_split(self, channel: Channel, header: dict[str, Any]) -> Reply:
        """``n.split`` comes from the proven leader of our group's current term only."""
        group = self.group
        try:
            split = msgspec.convert(header, SplitRequest, strict=True)
        except msgspec.ValidationError as exc:
            return Reply.fail("bad-request", f"n.split: {exc}")
        if (
            group is None
            or group.is_leader
            or split.gid != group.group_id
            or channel.peer_key != group.leader_key
            or split.term != group.term
        ):
            return Reply.fail("not-leader", "splits come from our leader only")
        if split.found is not None:
            await self._leave_group()
            new = self._found(split.found, group.model)
            self.migration.settled(time.monotonic())  # a founder that left at once strands it
            self.moves.append((time.time(), group.group_id, new.group_id))
            return Reply({"group_id": new.group_id, "addr": list(self.tcp_addr)})
        if split.join is None or split.addr is None or split.key is None:
            return Reply.fail("bad-request", "n.split: found a group or join one")
        advert_like = GroupAdvert(
            group_id=split.join,
            name=split.join,
            task=self.config.task,
            leader=split.addr,
            leader_key=split.key,
            term=0,
            policy="open",
            metrics=GroupMetrics(),
        )
        move = self.move_to(advert_like, reason=split.reason, chosen=False)
        self.tasks.spawn(move, name="split-move")
        return Reply({})


class SplitRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``n.split``: found a group named ``found``, or join group ``join`` led by ``key``."""

    gid: Annotated[str, Meta(max_length=16)]
    term: Annotated[int, Meta(ge=0, le=MAX_TERM)]
    found: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    join: Annotated[str, Meta(min_length=16, max_length=16)] | None = None
    addr: (
        tuple[
            Annotated[str, Meta(min_length=1, max_length=253)], Annotated[int, Meta(ge=1, le=65535)]
        ]
        | None
    ) = None
    key: Annotated[bytes, Meta(min_length=32, max_length=32)] | None = None
    reason: Literal["split", "merge"] = "split"


class SplitFounded(msgspec.Struct, kw_only=True):
    """The reply to ``n.split`` asking a member to found a group: where its group is."""

    group_id: GroupId
    addr: WireAddress
