"""``Leading``: what this node does while it leads its group.

Elected (``on_leader``), it runs the rounds (the app's ServerApp, or one strategy round at a
time), keeps the group's advert published, and starts the leader's watches: rivals (another
leader of a newer term that our roster elected: the group forked while we were cut off, so
we join it) and whatever ``watches`` the node adds (merging). Deposed (``on_follower``) or
leaving (``stop``), all of it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from flwr.app import ArrayRecord

from .. import events, logcontext
from ..aio import TaskOwner
from ..dht import DhtNode, fetch_advert
from ..errors import MyceliumError
from ..fl.app import FlowerApp
from ..fl.app_leader import lead_app
from ..fl.client import ClientRunner
from ..fl.leader import RoundReport, lead_rounds
from ..fl.strategies import make_strategy
from ..group.member import GroupMember
from ..group.state import ModelSnapshot
from ..histogram import ROUND_BUCKETS, Histogram
from ..records import GroupAdvert
from .config import NodeConfig
from .membership import Emit, Membership
from .publishing import Publisher

log = logging.getLogger(__name__)
KEEP_ROUNDS = 10_000  # round reports a leader keeps (days of rounds would grow without end)

Watch = Callable[[GroupMember], Coroutine[Any, Any, None]]
OnUpdates = Callable[[dict[bytes, Any], ModelSnapshot], None]


class Leading:
    """The leader's rounds, advert and watches, for the group ``membership`` holds."""

    def __init__(
        self,
        identity_key: bytes,
        config: NodeConfig,
        dht: DhtNode,
        membership: Membership,
        publisher: Publisher,
        runner: ClientRunner,
        emit: Emit,
        tasks: TaskOwner,
        *,
        flower_app: FlowerApp | None,
        initial: Callable[[], ArrayRecord],
        split_check: Callable[[GroupMember], OnUpdates],
    ) -> None:
        self.me = identity_key
        self.config = config
        self.dht = dht
        self.membership = membership
        self.publisher = publisher
        self.runner = runner
        self.emit = emit
        self.tasks = tasks
        self.flower_app = flower_app
        self.initial = initial
        self.split_check = split_check
        # our rounds as leader, in every group we led: the latest KEEP_ROUNDS of them
        self.rounds = publisher.rounds
        self.rounds_led = 0  # ... and how many in all, and their seconds
        self.round_seconds = 0.0
        self.round_times = Histogram(ROUND_BUCKETS)  # the seconds of each, by bucket
        self.watches: list[Watch] = []  # more to run while leading (the node adds merging)
        #: leaders run rounds while this is set (clear it to pause this node's group)
        self.training = asyncio.Event()
        self.training.set()
        self._running: list[asyncio.Task[Any]] = []
        self._refreshing: asyncio.Task[None] | None = None

    def on_leader(self, term: int) -> None:
        """Elected in ``term``: start the rounds, the advert and the watches."""
        group = self.membership.group
        assert group is not None
        self.emit(
            events.LEADER,
            f"leader of group {group.info.name}, term {term}, from round {group.model.round}",
            group=group.info.name,
            group_id=group.group_id,
            term=term,
            round=group.model.round,
            digest=group.model.digest.hex(),
            # who elected it, on which roster: what a split brain is traced back to
            voters=[key.hex()[:8] for key, _ in group.cert.votes] if group.cert else [],
            roster=sorted(key.hex()[:8] for key in group.roster),
            rv=list(group.roster_version),
        )
        self.stop()
        self._running = [
            self.tasks.spawn(self._lead(group), name="lead"),
            self.dht.keep_published(
                self.publisher.advert, interval=self.config.group.advert_ttl / 3
            ),
            self.tasks.spawn(self._watch_rivals(group), name="rivals"),
            *(self.tasks.spawn(watch(group), name="watch") for watch in self.watches),
        ]

    def on_follower(self) -> None:
        """Deposed: a newer term exists."""
        self.stop()
        group = self.membership.group
        self.emit(
            events.FOLLOWER,
            "stepped down: a newer term exists",
            group_id=group.group_id if group else None,
            term=group.term if group else 0,
        )

    def stop(self) -> None:
        """Stop everything leading runs (deposed, leaving, or moving on)."""
        for task in self._running:
            task.cancel()
        self._running = []

    async def _lead(self, group: GroupMember) -> None:
        """The leader's rounds: the app's ServerApp (``--app``), or one strategy round each.
        What they log (Flower's strategy thread too) names this group, also on the way out."""
        c = self.config.fl
        logcontext.extend(
            lambda: {"group": group.group_id, "term": group.term, "round": group.model.round}
        )  # this task's own context: nothing to unbind
        if self.flower_app is not None:
            await lead_app(
                group,
                self.runner,
                self.flower_app,
                on_round=self._on_round,
                round_pause=c.round_pause,
                reply_timeout=c.reply_timeout,
                gate=self.training,
                screening=c.screening,
            )
            return
        await lead_rounds(
            group,
            self.runner,
            make_strategy(c.strategy),
            initial=self.initial,
            train_config={"lr": c.learning_rate, "local-epochs": c.local_epochs},
            on_round=self._on_round,
            round_pause=c.round_pause,
            reply_timeout=c.reply_timeout,
            on_updates=self.split_check(group),
            gate=self.training,
            screening=c.screening,
        )

    def _on_round(self, report: RoundReport) -> None:
        self.rounds.append(report)
        self.rounds_led += 1
        self.round_seconds += report.seconds
        self.round_times.observe(report.seconds)
        if len(self.rounds) > KEEP_ROUNDS + KEEP_ROUNDS // 10:  # trimmed now and then
            del self.rounds[: len(self.rounds) - KEEP_ROUNDS]
        group = self.membership.group
        self.emit(
            events.ROUND,
            f"round {report.round} (term {report.term}): accuracy {report.accuracy:.3f}, "
            f"loss {report.loss:.3f}, {report.members} members, {report.seconds:.2f} s",
            group=group.info.name if group else None,
            group_id=group.group_id if group else None,
            round=report.round,
            term=report.term,
            accuracy=report.accuracy,
            loss=report.loss,
            members=report.members,
            seconds=report.seconds,
            digest=report.digest,
        )
        self.publisher.stale = True
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = self.tasks.spawn(self.publisher.refresh(), name="advert")
            self._running.append(self._refreshing)  # it ends when leading does

    async def _watch_rivals(self, group: GroupMember) -> None:
        """While leading: if the group's advert names another leader of a newer term whose
        certificate proves it to our roster, the group forked (we were cut off while the others
        elected): join that leader. An advert that proves nothing to us changes nothing."""
        while True:
            await asyncio.sleep(self.config.group.record_interval)
            if self.membership.group is not group or not group.is_leader:
                return
            try:
                advert = await fetch_advert(self.dht, group.group_id)
            except (MyceliumError, OSError) as exc:
                log.debug("rival check of %s failed: %s", group.group_id, exc)
                continue
            if advert is None or advert.leader_key == self.me:
                continue
            if advert.term > group.term and advert.cert is not None and group.proves(advert.cert):
                self.tasks.spawn(self._yield(group, advert), name="yield")
                return

    async def _yield(self, group: GroupMember, advert: GroupAdvert) -> None:
        async with self.membership.change:
            if self.membership.group is not group or not group.is_leader:
                return
            self.emit(
                events.MERGE,
                f"group {group.info.name} has another leader ahead of us (term {advert.term}, "
                f"round {advert.metrics.round}); joining it with our members",
                group=group.info.name,
                group_id=group.group_id,
                term=advert.term,
            )
            assert advert.cert is not None
            if not await group.yield_to(advert.leader, advert.cert) and group.is_leader:
                self._running.append(  # it would not have us: lead on, and look again later
                    self.tasks.spawn(self._watch_rivals(group), name="rivals")
                )
