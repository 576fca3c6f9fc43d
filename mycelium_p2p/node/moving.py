"""``Mover``: moving between groups: migration checks, moves, and regroups.

- **Migration**: every ``group_evaluation_interval`` the node measures its group's model and a
  few candidates' on its own data (``migration.policy`` decides; an advert's claims never
  count) and moves where it clearly pays.
- **Moves**: leave the group cleanly, join the target or the first fallback that lets us in,
  else find a group as at start. Splits and merges move nodes the same way.
- **Regroups**: a group that has had no leader for ``stall_timeout`` (most of it died or is
  cut off) is left for another, or for one founded with its model.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

from .. import events
from ..aio import TaskOwner, loop_time
from ..dht import DhtNode, fetch_adverts, publish_advert
from ..errors import ChannelError, JoinRefused, MyceliumError, RemoteError
from ..fl.client import ClientRunner
from ..group.transport import ChannelServer
from ..migration.measure import fetch_model, score
from ..migration.policy import MigrationPolicy
from ..records import GroupAdvert
from .choosing import joinable
from .config import NodeConfig
from .leading import Leading
from .membership import Emit, Membership
from .publishing import Publisher

log = logging.getLogger(__name__)


class Mover:
    """Migration, moves and regroups of the node whose group ``membership`` holds."""

    def __init__(
        self,
        config: NodeConfig,
        membership: Membership,
        leading: Leading,
        publisher: Publisher,
        dht: DhtNode,
        channels: ChannelServer,
        runner: ClientRunner,
        migration: MigrationPolicy,
        emit: Emit,
        tasks: TaskOwner,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.membership = membership
        self.leading = leading
        self.publisher = publisher
        self.dht = dht
        self.channels = channels
        self.runner = runner
        self.migration = migration
        self.emit = emit
        self.tasks = tasks
        self.rng = rng
        self.migrating: asyncio.Task[None] | None = None

    # -- migration --------------------------------------------------------------------------------

    def start_migration(self) -> None:
        """Evaluate candidate groups every ``group_evaluation_interval`` from now on."""
        if self.migrating is None:
            self.migrating = self.tasks.spawn(self._migrate_loop(), name="migration")

    async def _migrate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.migration.group_evaluation_interval)
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
        group = self.membership.group
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
        candidates = self.rng.sample(adverts, min(limit, len(adverts)))
        scores = await self._measure(candidates)
        decision = self.migration.decide(own, scores, loop_time())
        best = max(scores, key=scores.__getitem__, default=None)
        self.emit(
            events.EVALUATED,
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
        if decision.move_to is not None and self.membership.group is group:
            target = next(a for a in candidates if a.group_id == decision.move_to)
            threshold = self.migration.config.performance_threshold
            others = sorted(  # the other groups that also beat ours, best first
                (a for a in candidates if a is not target and a.group_id in scores),
                key=lambda a: -scores[a.group_id],
            )
            fallbacks = [a for a in others if scores[a.group_id] - own > threshold]
            await self.move_to(target, reason=decision.reason, fallbacks=fallbacks)
        return decision.reason

    async def _measure(self, candidates: list[GroupAdvert]) -> dict[str, float]:
        """Each candidate's model scored on our data (those we could fetch and score)."""
        scores: dict[str, float] = {}
        for advert in candidates:
            try:
                model = await fetch_model(
                    self.channels, advert, self.config.fl.reply_timeout, self.membership.model_cap
                )
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
        return scores

    # -- moves ------------------------------------------------------------------------------------

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
        async with self.membership.change:
            await self.move(advert, reason, fallbacks, chosen=chosen)

    async def move(
        self,
        advert: GroupAdvert,
        reason: str,
        fallbacks: Sequence[GroupAdvert] = (),
        *,
        chosen: bool = True,
    ) -> None:
        """``move_to`` for a caller that holds ``membership.change``."""
        old = self.membership.group
        if old is None:
            return
        origin = self.membership.origin
        old.closing = True  # a newcomer admitted now would be left behind, or lead it alone
        self.leading.stop()
        if old.is_leader and len(old.roster) == 1:
            # an empty group dissolves: say so now rather than when its advert expires
            self.leading.rounds.clear()
            await publish_advert(self.dht, self.publisher.advert(members=0))
            if old.cert is not None:
                self.publisher.note_ended(old.group_id, old.cert.term)
        await self.membership.leave()
        if chosen:
            self.migration.moved(loop_time())
        else:
            self.migration.settled(loop_time())
        for target in (advert, *fallbacks):
            self.emit(
                events.MOVING,
                f"moving from {old.info.name} to {target.name}: {reason}",
                group=old.info.name,
                group_id=old.group_id,
                to=target.name,
                to_id=target.group_id,
                reason=reason,
            )
            try:
                await self.membership.join(target)
            except Exception as exc:  # whatever one candidate does, we end up in a group
                if not isinstance(exc, (JoinRefused, ChannelError, RemoteError)):
                    log.warning("joining %s failed", target.name, exc_info=True)
                self.emit(
                    events.REFUSED,
                    f"{target.name} refused us ({type(exc).__name__}: {exc})",
                    group_id=target.group_id,
                    reason=str(exc),
                )
                continue
            self.membership.moved(old.group_id, target.group_id, chosen=chosen)
            return
        # nobody let us in (adverts lag: a group full by now): find another group, or found
        # one with the model we had rather than start over, and keep the way back we had
        await self.membership.enter(as_configured=False, model=old.model)
        self.membership.keep_origin(origin, old.group_id)

    # -- regroups ---------------------------------------------------------------------------------

    async def watch_group(self) -> None:
        """Leave a group that has had no leader for ``stall_timeout`` (most of it died or is cut
        off: it cannot elect one) for another group, or found one seeded with its model."""
        c = self.config.group
        limit = c.stall_timeout or 10 * c.heartbeat_interval
        while True:
            await asyncio.sleep(c.heartbeat_interval)
            group = self.membership.group
            if group is None or group.leaderless_for() < limit:
                continue
            async with self.membership.change:
                if self.membership.group is not group:
                    continue
                self.emit(
                    events.REGROUP,
                    f"group {group.info.name} has had no leader for {limit:g} s; "
                    "finding another group",
                    group=group.info.name,
                    group_id=group.group_id,
                )
                await self.membership.leave()
                self.migration.settled(loop_time())
                await self.membership.enter(
                    as_configured=False,
                    model=group.model,
                    origin=(group.group_id, frozenset(group.roster)),
                )
