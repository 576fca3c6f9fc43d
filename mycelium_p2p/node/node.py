"""``Node``: a full node: DHT peer, group member, Flower client and (when elected) leader.

The CLI's ``mycelium-p2p join`` runs exactly this; embed it from Python the same way::

    node = Node(NodeConfig(bootstrap=[("10.0.0.5", 8468)], fl=FlSettings(data_shard="0/4")))
    await node.start()
    ...
    await node.stop()

A node is a few parts with one job each, wired here:

- ``apps`` (loaded once, at start): which ClientApp it runs, and its group's starting model;
- ``membership``: which group we are in; entering (join or found) and leaving one;
- ``leading``: while we lead: the rounds, the advert, the leader's watches;
- ``publisher``: the group's advert and our presence record in the DHT;
- ``mover``: migration checks, moves, regroups of a leaderless group;
- ``splitter``: splitting a group whose members disagree, and the ``n.split`` order;
- ``merger``: merging small groups into larger ones, and going back after a cut heals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import Counter, deque
from concurrent.futures import Executor
from typing import Any

from .. import events, logcontext
from ..addresses import Address, ip_literal, reachable_ip, resolve
from ..aio import TaskOwner, loop_time
from ..dht import DhtNode, publish_advert
from ..dht.transport import DatagramNetwork
from ..errors import BootstrapError, ConfigError
from ..fl.client import ClientRunner
from ..fl.leader import RoundReport
from ..fl.worker import DEFAULT_APP, ClientProcess
from ..group.member import GroupMember
from ..group.streams import StreamNetwork
from ..group.transport import Channel, ChannelServer, Reply
from ..identity import Identity
from ..migration.policy import MigrationPolicy
from .apps import Initial, app_node_config, flower_app_of, load_task
from .choosing import model_cap, select_group
from .config import Event, NodeConfig, NodeEvent
from .contacts import keep_contacts, load_contacts, remember_contacts
from .leading import Leading
from .lifecycle import DataDirLock
from .membership import GroupHooks, Membership
from .merging import Merger
from .moving import Mover
from .publishing import Publisher
from .splitting import Splitter

__all__ = ["Node", "NodeConfig", "NodeEvent", "select_group"]

log = logging.getLogger(__name__)
RECENT_EVENTS = 300  # events a node keeps for a web view (rounds, evaluations, moves)


class Node:
    """A full mycelium-p2p node. ``start``, then it trains; ``stop`` leaves cleanly."""

    def __init__(
        self,
        config: NodeConfig,
        identity: Identity | None = None,
        on_event: Event | None = None,
        *,
        compute: Executor | ClientProcess | None = None,
        network: DatagramNetwork | None = None,
        streams: StreamNetwork | None = None,
    ) -> None:
        """``compute``: where the node's ClientApp (training, evaluation) runs; by default a
        thread of its own, or with ``config.isolation == "process"`` a worker process of its
        own (training then never holds the GIL its heartbeats need). Many nodes in one process
        should share one: a ``ThreadPoolExecutor(1)`` (threads of their own would fight over
        the GIL, at 3x the CPU for the same work) or one ``ClientProcess`` (which the caller
        closes). ``network`` and ``streams``: where its DHT datagrams and its channels go (UDP
        and TCP unless given; ``mycelium_p2p.testing``'s simulated network in tests)."""
        if config.fl.isolation not in ("thread", "process"):
            raise ConfigError(f"isolation {config.fl.isolation!r}: expected thread or process")
        self.flower_app = flower_app_of(config.fl)
        if self.flower_app is not None:  # the group's task is the app's
            config = dataclasses.replace(config, task=self.flower_app.task)
        self.config = config
        self._lock = DataDirLock(config.data_dir) if config.data_dir else None
        if identity is None:
            identity = (
                Identity.load_or_create(config.data_dir) if config.data_dir else Identity.generate()
            )
        self.identity = identity
        self.on_event = on_event or (lambda event: log.info("%s", event.text))
        #: events emitted since the node was made, by kind; the latest few (a web view reads them)
        self.event_counts: Counter[str] = Counter()
        self.recent_events: deque[NodeEvent] = deque(maxlen=RECENT_EVENTS)
        self.dht = DhtNode(identity, config.dht, network=network)
        self.channels = ChannelServer(identity, self._route, streams=streams)
        self.tasks = TaskOwner("node")
        app, initial = load_task(self.flower_app, config.fl, config.seed)
        self._worker: ClientProcess | None = None  # a worker process this node owns
        if compute is None and config.fl.isolation == "process":
            compute = self._worker = ClientProcess(torch_threads=config.fl.torch_threads)
        self.runner = ClientRunner(
            app,
            identity.public_key,
            app_node_config(self.flower_app, config.fl, config.seed),
            executor=compute,
            app_spec=config.fl.client_app or DEFAULT_APP,
            caps=config.fl.train_caps,
            run_config=self.flower_app.run_config if self.flower_app else None,
        )
        self.runner.on_failure = self._on_app_failure
        #: why this node left its group for good (its ClientApp kept failing), and when
        self.gave_up: str | None = None
        self.ended = asyncio.Event()
        self.migration = MigrationPolicy(config.migration.policy_config())
        self._wire(initial)

    def _wire(self, initial: Initial) -> None:
        """Make the parts and connect them (the arrows point one way, except the hooks)."""
        c, me = self.config, self.identity.public_key
        rng = random.Random(c.seed ^ int.from_bytes(me[:4], "big"))
        hooks = GroupHooks(
            on_leader=lambda _: None, on_follower=lambda: None, on_leave=lambda: None
        )
        self.membership = Membership(
            self.identity,
            c,
            self.dht,
            self.channels,
            self.runner,
            self.emit,
            hooks,
            rng,
            model_cap=model_cap(initial()),
        )
        self.publisher = Publisher(
            self.identity, c, self.dht, self.membership, self.runner, [], self.traffic_totals
        )
        self.leading = Leading(
            me,
            c,
            self.dht,
            self.membership,
            self.publisher,
            self.runner,
            self.emit,
            self.tasks,
            flower_app=self.flower_app,
            initial=initial,
            split_check=lambda group: self.splitter.check(group),
        )
        hooks.on_leader = self.leading.on_leader
        hooks.on_follower = self.leading.on_follower
        hooks.on_leave = self.leading.stop
        self.mover = Mover(
            c,
            self.membership,
            self.leading,
            self.publisher,
            self.dht,
            self.channels,
            self.runner,
            self.migration,
            self.emit,
            self.tasks,
            rng,
        )
        self.splitter = Splitter(
            me, c, self.membership, self.migration, self.emit, self.tasks, self.mover.move_to
        )
        self.merger = Merger(
            me,
            c,
            self.membership,
            self.mover,
            self.dht,
            self.channels,
            self.runner,
            self.emit,
            self.tasks,
        )
        if c.migration.merge:
            self.leading.watches.append(self.merger.watch_merges)

    # -- what users and tools read -------------------------------------------------------------

    @property
    def group(self) -> GroupMember | None:
        """The group this node is in (None between groups)."""
        return self.membership.group

    @property
    def tcp_addr(self) -> Address:
        """Where peers reach this node's channels."""
        return self.membership.tcp_addr

    @property
    def rounds(self) -> list[RoundReport]:
        """The rounds this node led, in every group it led."""
        return self.leading.rounds

    @property
    def moves(self) -> list[tuple[float, str, str]]:
        """(time, from group, to group) of each move."""
        return self.membership.moves

    @property
    def training(self) -> asyncio.Event:
        """Leaders run rounds while this is set (clear it to pause this node's group)."""
        return self.leading.training

    def emit(self, kind: events.EventKind, text: str, **fields: Any) -> None:
        """Report an event to ``on_event`` (with this node's id in its fields)."""
        fields = {"node": self.identity.node_id.hex()[:12], **fields}
        event = NodeEvent(kind, text, fields, time.time())
        self.event_counts[kind] += 1
        self.recent_events.append(event)
        self.on_event(event)

    async def evaluate_groups(self) -> str:
        """Measure our group and candidates on our own data; move if it pays (the reason)."""
        return await self.mover.evaluate_groups()

    def start_migration(self) -> None:
        """Evaluate candidate groups every ``group_evaluation_interval`` from now on."""
        self.mover.start_migration()

    async def move_to(self, advert: Any, reason: str = "", fallbacks: Any = ()) -> None:
        """Leave our group cleanly for ``advert``'s (else a fallback's, else any group)."""
        await self.mover.move_to(advert, reason, fallbacks)

    # -- starting ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Join the DHT, then find, join or found a group, and start training. Everything the
        node starts here logs with its facts (``logcontext``: node, group, term, round)."""
        token = logcontext.bind(self.log_facts)
        try:
            await self._start()
        finally:
            logcontext.unbind(token)

    def log_facts(self) -> dict[str, Any]:
        """What each of this node's log records carries (``--log-format json``)."""
        group = self.group
        facts: dict[str, Any] = {"node": self.identity.node_id.hex()[:12]}
        if group is not None:
            facts.update(group=group.group_id, term=group.term, round=group.model.round)
        return facts

    async def _start(self) -> None:
        c = self.config
        if self._lock is not None:
            self._lock.acquire()
        await self.dht.listen(c.port, c.host)
        _, tcp_port = await self.channels.listen(c.host, c.port or 0)
        advertise = c.advertise_host or reachable_ip(c.host, c.bootstrap)
        if ip_literal(advertise) is None:  # our own user's name: peers are sent the address
            ((advertise, _),) = await resolve([(advertise, tcp_port)])
        self.membership.tcp_addr = (advertise, tcp_port)
        if c.bootstrap:
            await self._bootstrap()
        if c.data_dir is not None:
            self.tasks.spawn(keep_contacts(self.dht, c.data_dir), name="contacts")
        self.emit(
            events.UP,
            f"node {self.identity.node_id.hex()[:12]} up: udp {self.dht.address[1]}, "
            f"tcp {advertise}:{tcp_port}",
            udp=self.dht.address[1],
            tcp=f"{advertise}:{tcp_port}",
            domain=c.fl.domain,
        )
        await self.membership.enter()
        if self.group is not None and self.group.is_leader:
            await publish_advert(self.dht, self.publisher.advert())  # findable once start() returns
        self.tasks.spawn(self.publisher.presence(), name="presence")
        self.tasks.spawn(self.mover.watch_group(), name="group-watch")
        if c.migration.merge:
            self.tasks.spawn(self.merger.watch_return(), name="return-watch")
        if c.migration.migrate:
            self.start_migration()

    async def _bootstrap(self) -> None:
        """Join the DHT; keep trying for ``bootstrap_wait`` s (a seed may be booting or busy)."""
        c = self.config
        deadline = loop_time() + c.bootstrap_wait
        hints = load_contacts(c.data_dir) if c.data_dir is not None else []
        while True:
            try:
                await self.dht.bootstrap(c.bootstrap, hints)
                return
            except BootstrapError as exc:
                if loop_time() >= deadline:
                    raise
                self.emit(events.WAITING, f"{exc}; trying again")
                await asyncio.sleep(2.0)

    # -- a ClientApp that keeps failing ---------------------------------------------------------

    def _on_app_failure(self, failures: Any) -> None:
        """Our ClientApp failed again: after ``max_app_failures`` calls in a row, leave the group
        for good (a member whose app always fails only holds its group hostage)."""
        limit = self.config.fl.max_app_failures
        if limit <= 0 or failures.streak < limit or self.gave_up is not None:
            return
        self.gave_up = (
            f"this node's ClientApp failed {failures.streak} times in a row "
            f"(last: {failures.last}); left the group: fix the app and start the node again"
        )
        self.tasks.spawn(self._give_up(), name="give-up")

    async def _give_up(self) -> None:
        async with self.membership.change:
            group = self.group
            if self.mover.migrating is not None:
                self.mover.migrating.cancel()
            await self.membership.leave()
            self.emit(
                events.APP_FAILED,
                self.gave_up or "",
                group=group.info.name if group else None,
                group_id=group.group_id if group else None,
                error=self.runner.failures.last,
            )
            self.ended.set()

    # -- requests from peers ----------------------------------------------------------------------

    async def _route(
        self, channel: Channel, method: str, header: dict[str, Any], segments: list[bytes]
    ) -> Reply:
        group = self.group
        if group is None:
            return Reply.fail("no-group", "this node is not in a group yet")
        if method.startswith("g."):
            return await group.handle(channel, method, header, segments)
        if method == "n.split":
            return await self.splitter.on_split(channel, header)
        if method == "fl.msg":
            if header.get("gid") != group.group_id:
                return Reply.fail("wrong-group", f"this node is in group {group.group_id}")
            try:
                return await self.runner.handle(group, channel, header, segments)
            except (KeyError, TypeError, ValueError) as exc:
                return Reply.fail("bad-request", f"{type(exc).__name__}: {exc}")
        return Reply.fail("bad-request", f"unknown method {method}")

    # -- stopping --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Leave the group cleanly and close everything (what SIGINT/SIGTERM do)."""
        await self.membership.leave()
        await self.tasks.close()
        if self.config.data_dir is not None:
            remember_contacts(self.dht, self.config.data_dir)
        await self.channels.close()
        await self.dht.close()
        self.runner.close()
        if self._worker is not None:
            await self._worker.close()
        if self._lock is not None:
            self._lock.release()

    def traffic_totals(self) -> tuple[int, int]:
        """Bytes received and sent since start: channel frames and DHT datagrams."""
        channels = self.channels.traffic()
        dht = self.dht.stats if getattr(self.dht, "protocol", None) is not None else None
        return (
            channels["bytes_in"] + (dht.bytes_in if dht else 0),
            channels["bytes_out"] + (dht.bytes_out if dht else 0),
        )

    def status(self) -> dict[str, Any]:
        """Where the node is (group, role, term, round), its app's failures, and what it has
        sent and received: channel frames (by method) and DHT datagrams, in bytes."""
        group = self.group
        dht = self.dht if getattr(self.dht, "protocol", None) is not None else None
        return {
            "node_id": self.identity.node_id.hex(),
            "group": group.info.name if group else None,
            "group_id": group.group_id if group else None,
            "role": (group.role if group else "none"),
            "term": group.term if group else 0,
            "round": group.model.round if group else 0,
            "members": len(group.roster) if group else 0,
            "app_failures": self.runner.failures.as_dict(),
            "traffic": {
                **self.channels.traffic(),
                "dht_bytes_in": dht.stats.bytes_in if dht else 0,
                "dht_bytes_out": dht.stats.bytes_out if dht else 0,
            },
        }
