"""``Node``: a full node: DHT peer, group member, Flower client and (when elected) leader.

The CLI's ``mycelium-p2p join`` runs exactly this; embed it from Python the same way::

    node = Node(NodeConfig(bootstrap=[("10.0.0.5", 8468)], data_shard="0/4"))
    await node.start()
    ...
    await node.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord
from flwr.clientapp import ClientApp

from ..addresses import ip_literal, reachable_ip, resolve
from ..aio import TaskOwner
from ..dht import DhtNode, fetch_adverts, publish_advert
from ..errors import BootstrapError, ConfigError
from ..fl.app import FlowerApp, load_flower_app
from ..fl.app_leader import lead_app
from ..fl.client import ClientRunner, load_client_app
from ..fl.leader import RoundReport, lead_rounds
from ..fl.strategies import make_strategy
from ..fl.worker import DEFAULT_APP, ClientProcess
from ..group.member import GroupMember, JoinRefused
from ..group.state import Address, GroupInfo, ModelSnapshot
from ..group.transport import Channel, ChannelServer, Reply
from ..identity import Identity
from ..migration.policy import MigrationPolicy
from ..migration.split import SplitPolicy
from ..records import GroupAdvert
from ..records.charter import GroupCharter
from .config import Event, NodeConfig, NodeEvent
from .contacts import keep_contacts, load_contacts, remember_contacts
from .lifecycle import DataDirLock
from .merging import MergingMixin, Origin
from .moving import MovingMixin, rank_joinable
from .publishing import PublishingMixin

__all__ = ["Node", "NodeConfig", "NodeEvent"]

log = logging.getLogger(__name__)
GROUP_LOOKUP_RETRIES = 5  # once a second, for a --group not advertised yet


def select_group(adverts: list[GroupAdvert], wanted: str) -> list[GroupAdvert]:
    """The advert ``wanted`` names: by group id, or by name when one group alone bears it
    (anyone can found a group of any name). Raises ``ConfigError`` for an ambiguous name."""
    by_id = [a for a in adverts if a.group_id == wanted]
    if by_id:
        return by_id
    by_name = [a for a in adverts if a.name == wanted]
    if len(by_name) > 1:
        ids = ", ".join(sorted(a.group_id for a in by_name))
        raise ConfigError(f"several groups are named {wanted!r} ({ids}): choose one by its id")
    return by_name


class Node(MovingMixin, MergingMixin, PublishingMixin):
    """A full mycelium-p2p node. ``start``, then it trains; ``stop`` leaves cleanly."""

    def __init__(
        self,
        config: NodeConfig,
        identity: Identity | None = None,
        on_event: Event | None = None,
        *,
        compute: Executor | ClientProcess | None = None,
    ) -> None:
        """``compute``: where the node's ClientApp (training, evaluation) runs; by default a
        thread of its own, or with ``config.isolation == "process"`` a worker process of its
        own (training then never holds the GIL its heartbeats need). Many nodes in one process
        should share one: a ``ThreadPoolExecutor(1)`` (threads of their own would fight over
        the GIL, at 3x the CPU for the same work) or one ``ClientProcess`` (which the caller
        closes)."""
        if config.isolation not in ("thread", "process"):
            raise ConfigError(f"isolation {config.isolation!r}: expected thread or process")
        self.flower_app = self._load_app(config)
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
        self.dht = DhtNode(identity, config.dht)
        self.channels = ChannelServer(identity, self._route)
        self.group: GroupMember | None = None
        self.tasks = TaskOwner("node")
        self.rounds: list[RoundReport] = []
        self._leading: list[asyncio.Task[Any]] = []
        self._advert_seq = 0
        self._advert_stale = False
        self._advert_refresh: asyncio.Task[None] | None = None
        self._heartbeat_seq = 0
        self._ended: dict[str, tuple[int, float]] = {}
        self._split_policies: dict[str, SplitPolicy] = {}  # the group we lead: its splits
        self._app, self._initial = self._load_task()
        self._worker: ClientProcess | None = None  # a worker process this node owns
        if compute is None and config.isolation == "process":
            compute = self._worker = ClientProcess(torch_threads=config.torch_threads)
        self.runner = ClientRunner(
            self._app,
            identity.public_key,
            self._node_config(),
            executor=compute,
            app_spec=config.client_app or DEFAULT_APP,
            caps=config.train_caps,
            run_config=self.flower_app.run_config if self.flower_app else None,
        )
        self.runner.on_failure = self._on_app_failure
        #: why this node left its group for good (its ClientApp kept failing), and when
        self.gave_up: str | None = None
        self.ended = asyncio.Event()
        self.tcp_addr: Address = ("", 0)
        self.migration = MigrationPolicy(config.migration_config())
        self.moves: list[tuple[float, str, str]] = []  # (time, from group, to group)
        self._migrating: asyncio.Task[None] | None = None
        #: leaders run rounds while this is set (clear it to pause this node's group)
        self.training = asyncio.Event()
        self.training.set()
        self._group_change = asyncio.Lock()  # one move, split or regroup at a time
        self._origin: Origin | None = None  # after a regroup: where we came from
        self._rng = random.Random(config.seed ^ int.from_bytes(identity.public_key[:4], "big"))

    def emit(self, kind: str, text: str, **fields: Any) -> None:
        """Report an event to ``on_event`` (with this node's id in its fields)."""
        fields = {"node": self.identity.node_id.hex()[:12], **fields}
        self.on_event(NodeEvent(kind, text, fields, time.time()))

    # -- set-up --------------------------------------------------------------------------------

    @staticmethod
    def _load_app(c: NodeConfig) -> FlowerApp | None:
        """The Flower App of ``--app`` (None without one); it runs in this process."""
        if not c.app:
            return None
        if c.client_app:
            raise ConfigError("--app and --client-app exclude each other")
        if c.isolation != "thread":
            raise ConfigError("--app runs its ClientApp in a thread (--isolation thread)")
        return load_flower_app(c.app, c.run_config, c.app_node_config)

    def _node_config(self) -> dict[str, Any]:
        if self.flower_app is not None:
            return dict(self.flower_app.node_config)
        c = self.config
        return {
            "data-shard": c.data_shard,
            "domain": c.domain,
            "shift": c.shift,
            "data-file": c.data_file or "",
            "seed": c.seed,
        }

    def _load_task(self) -> tuple[ClientApp, Callable[[], ArrayRecord]]:
        """The ClientApp and the group's starting model; bad data fails here, at start."""
        c = self.config
        if self.flower_app is not None:
            initial = self.flower_app.initial
            return self.flower_app.client_app, lambda: initial
        if c.client_app:
            app = load_client_app(c.client_app)
            module = __import__(c.client_app.partition(":")[0], fromlist=["initial_arrays"])
            initial = getattr(module, "initial_arrays", None)
            if not callable(initial):
                raise ConfigError(
                    f"--client-app {c.client_app}: its module must also define "
                    "initial_arrays() -> ArrayRecord (the group's starting model)"
                )
            return app, initial
        from ..fl import task as digits  # torch: only nodes running the default task load it

        if c.data_file:
            data = digits.load_array_file(c.data_file, seed=c.seed)
        else:
            data = digits.load_digits_task(
                digits.parse_shard(c.data_shard), c.domain, shift=c.shift, seed=c.seed
            )
        features, classes = data.num_features, data.num_classes
        return digits.make_client_app(), lambda: digits.initial_arrays(features, classes)

    async def start(self) -> None:
        """Join the DHT, then find, join or found a group, and start training."""
        c = self.config
        if self._lock is not None:
            self._lock.acquire()
        await self.dht.listen(c.port, c.host)
        _, tcp_port = await self.channels.listen(c.host, c.port or 0)
        advertise = c.advertise_host or reachable_ip(c.host, c.bootstrap)
        if ip_literal(advertise) is None:  # our own user's name: peers are sent the address
            ((advertise, _),) = await resolve([(advertise, tcp_port)])
        self.tcp_addr = (advertise, tcp_port)
        if c.bootstrap:
            await self._bootstrap()
        if c.data_dir is not None:
            self.tasks.spawn(keep_contacts(self.dht, c.data_dir), name="contacts")
        self.emit(
            "up",
            f"node {self.identity.node_id.hex()[:12]} up: udp {self.dht.address[1]}, "
            f"tcp {advertise}:{tcp_port}",
            udp=self.dht.address[1],
            tcp=f"{advertise}:{tcp_port}",
            domain=c.domain,
        )
        await self._enter_group()
        if self.group is not None and self.group.is_leader:
            await publish_advert(self.dht, self._advert())  # findable once start() returns
        self.tasks.spawn(self._publish_presence(), name="presence")
        self.tasks.spawn(self._watch_group(), name="group-watch")
        if c.merge:
            self.tasks.spawn(self._watch_return(), name="return-watch")
        if c.migrate:
            self.start_migration()

    async def _bootstrap(self) -> None:
        """Join the DHT; keep trying for ``bootstrap_wait`` s (a seed may be booting or busy)."""
        c = self.config
        deadline = time.monotonic() + c.bootstrap_wait
        hints = load_contacts(c.data_dir) if c.data_dir is not None else []
        while True:
            try:
                await self.dht.bootstrap(c.bootstrap, hints)
                return
            except BootstrapError as exc:
                if time.monotonic() >= deadline:
                    raise
                self.emit("waiting", f"{exc}; trying again")
                await asyncio.sleep(2.0)

    async def _enter_group(
        self,
        *,
        as_configured: bool = True,
        model: ModelSnapshot | None = None,
        origin: tuple[str, frozenset[bytes]] | None = None,
    ) -> None:
        """Found or join the configured group, or (after a failed move) any that has room.
        ``origin``: the group a regroup left and its roster; we remember it, to go back to
        once that group is reachable again (``_remember_origin``)."""
        c = self.config
        if c.create and as_configured:
            self._found(c.create)
            return
        adverts = await fetch_adverts(self.dht, c.task)
        if c.group and as_configured:
            chosen = select_group(adverts, c.group)
            for _ in range(GROUP_LOOKUP_RETRIES):  # a group founded a moment ago may be on its way
                if chosen:
                    break
                await asyncio.sleep(1.0)
                adverts = await fetch_adverts(self.dht, c.task)
                chosen = select_group(adverts, c.group)
            if not chosen:
                names = ", ".join(sorted({a.name for a in adverts})) or "none"
                raise ConfigError(
                    f"no group {c.group!r} is advertised for task {c.task!r} (advertised: {names})"
                )
        else:
            chosen = rank_joinable(adverts)
            if not chosen and c.founding_jitter > 0:  # nodes started together: let one found
                await asyncio.sleep(self._rng.uniform(0, c.founding_jitter))
                chosen = rank_joinable(await fetch_adverts(self.dht, c.task))
        refusals: list[str] = []
        tried: set[str] = set()
        if await self._join_first(chosen, refusals, tried):
            self._remember_origin(origin)
            return
        if refusals and not (c.group and as_configured) and c.founding_jitter > 0:
            # nodes cut off together (a partition) all fail to reach the groups they know at
            # once: look again, so that they mostly join the first of them to found one
            await asyncio.sleep(self._rng.uniform(0, c.founding_jitter))
            again = rank_joinable(await fetch_adverts(self.dht, c.task))
            if await self._join_first(
                [a for a in again if a.group_id not in tried], refusals, tried
            ):
                self._remember_origin(origin)
                return
        if c.group and as_configured:
            raise ConfigError(f"cannot join group {c.group!r}: {'; '.join(refusals)}")
        if refusals:  # say why, or a firewalled node founds groups of one without a word
            self.emit(
                "refused",
                f"could not join any advertised group ({'; '.join(refusals)}); founding one",
                reason="; ".join(refusals),
            )
        self._found(f"{c.task}-{self.identity.node_id.hex()[:6]}", model)
        self._remember_origin(origin)

    def _remember_origin(self, origin: tuple[str, frozenset[bytes]] | None) -> None:
        """After a regroup: remember ``origin``, the group we left and its roster then, to go
        back to once it is reachable again (``_return_target``, ``_watch_return``)."""
        group = self.group
        if origin is None or group is None or group.group_id == origin[0]:
            self._origin = None
            return
        self._origin = Origin(group.group_id, origin[0], time.monotonic(), origin[1])

    async def _join_first(
        self, chosen: list[GroupAdvert], refusals: list[str], tried: set[str]
    ) -> bool:
        """Join the first of ``chosen`` that lets us in; record why the others did not."""
        for advert in chosen:
            tried.add(advert.group_id)
            try:
                await self._join(advert)
                return True
            except JoinRefused as exc:
                refusals.append(f"{advert.name}: {exc}")
            except Exception as exc:  # a leader that broke the channel or sent nonsense
                log.warning("joining %s failed", advert.name, exc_info=True)
                refusals.append(f"{advert.name}: {type(exc).__name__}: {exc}")
        return False

    async def _join(self, advert: GroupAdvert) -> None:
        group = await GroupMember.join_group(
            self.identity,
            self.channels,
            self.tcp_addr,
            group_id=advert.group_id,
            leader_addr=advert.leader,
            leader_key=advert.leader_key,
            invite=self.config.invite,
            config=self.config.group_config(),
        )
        self._adopt(group)
        self.emit(
            "joined",
            f"joined group {advert.name} ({advert.group_id}) as member, "
            f"term {group.term}, round {group.model.round}",
            group=group.info.name,
            group_id=group.group_id,
            term=group.term,
            round=group.model.round,
        )
        group.start()

    def _found(self, name: str, model: ModelSnapshot | None = None) -> GroupMember:
        c = self.config
        charter = GroupCharter.found(
            self.identity,
            name=name,
            task=c.task,
            policy=c.policy,
            capacity=c.capacity,
            now=time.time(),
        )
        info = GroupInfo(charter)
        group = GroupMember(self.identity, self.channels, info, self.tcp_addr, c.group_config())
        if model is not None:
            group.adopt_model(model)
        self._adopt(group)
        self.emit(
            "founded",
            f"founded group {name} ({info.group_id}), {c.policy}, capacity {c.capacity}",
            group=name,
            group_id=info.group_id,
            policy=c.policy,
            capacity=c.capacity,
        )
        group.found()
        group.start()
        return group

    def _adopt(self, group: GroupMember) -> None:
        self.group = group
        if self.config.data_dir is not None:
            self._save_charter(group.info)
        group.on_leader = self._on_leader
        group.on_follower = self._on_follower

    def _save_charter(self, info: GroupInfo) -> None:
        """Keep the charters of our groups, so ``mycelium-p2p invite`` can name them."""
        assert self.config.data_dir is not None
        folder = Path(self.config.data_dir) / "groups"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{info.group_id}.charter"
        if not path.exists():
            path.write_bytes(info.charter.blob)

    # -- leading -------------------------------------------------------------------------------

    def _on_leader(self, term: int) -> None:
        assert self.group is not None
        self.emit(
            "leader",
            f"leader of group {self.group.info.name}, term {term}, "
            f"from round {self.group.model.round}",
            group=self.group.info.name,
            group_id=self.group.group_id,
            term=term,
            round=self.group.model.round,
            digest=self.group.model.digest.hex(),
        )
        c = self.config
        self._stop_leading()
        self._leading = [
            self.tasks.spawn(self._lead(self.group), name="lead"),
            self.dht.keep_published(self._advert, interval=c.advert_ttl / 3),
            self.tasks.spawn(self._watch_rivals(self.group), name="rivals"),
        ]
        if c.merge and self.group.info.policy == "open":
            self._leading.append(self.tasks.spawn(self._watch_merges(self.group), name="merges"))

    async def _lead(self, group: GroupMember) -> None:
        """The leader's rounds: the app's ServerApp (``--app``), or one strategy round each."""
        c = self.config
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
            initial=self._initial,
            train_config={"lr": c.learning_rate, "local-epochs": c.local_epochs},
            on_round=self._on_round,
            round_pause=c.round_pause,
            reply_timeout=c.reply_timeout,
            on_updates=self._split_policy(group),
            gate=self.training,
            screening=c.screening,
        )

    def _on_follower(self) -> None:
        self._stop_leading()
        group = self.group
        self.emit(
            "follower",
            "stepped down: a newer term exists",
            group_id=group.group_id if group else None,
            term=group.term if group else 0,
        )

    def _stop_leading(self) -> None:
        for task in self._leading:
            task.cancel()
        self._leading = []

    def _on_round(self, report: RoundReport) -> None:
        self.rounds.append(report)
        group = self.group
        self.emit(
            "round",
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
        self._advert_stale = True
        if self._advert_refresh is None or self._advert_refresh.done():
            self._advert_refresh = self.tasks.spawn(self._refresh_advert(), name="advert")
            self._leading.append(self._advert_refresh)  # it ends when leading does

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
            return await self._on_split(channel, header)
        if method == "fl.msg":
            if header.get("gid") != group.group_id:
                return Reply.fail("wrong-group", f"this node is in group {group.group_id}")
            try:
                return await self.runner.handle(group, channel, header, segments)
            except (KeyError, TypeError, ValueError) as exc:
                return Reply.fail("bad-request", f"{type(exc).__name__}: {exc}")
        return Reply.fail("bad-request", f"unknown method {method}")

    # -- stopping --------------------------------------------------------------------------------

    async def _leave_group(self) -> None:
        """Stop leading, close the group (its loop must not win an election meanwhile) and say
        goodbye (at most 2 s: the others may be gone)."""
        self._stop_leading()
        group, self.group = self.group, None
        if group is not None:
            await group.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(group.leave(), 2.0)

    async def stop(self) -> None:
        """Leave the group cleanly and close everything (what SIGINT/SIGTERM do)."""
        await self._leave_group()
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

    def status(self) -> dict[str, Any]:
        group = self.group
        return {
            "node_id": self.identity.node_id.hex(),
            "group": group.info.name if group else None,
            "group_id": group.group_id if group else None,
            "role": (group.role if group else "none"),
            "term": group.term if group else 0,
            "round": group.model.round if group else 0,
            "members": len(group.roster) if group else 0,
            "app_failures": self.runner.failures.as_dict(),
        }
