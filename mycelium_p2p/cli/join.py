"""``mycelium-p2p join``: run a full node."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from .. import events, logcontext
from ..addresses import Address, resolve
from ..fl.limits import TrainCaps
from ..fl.strategies import STRATEGIES
from ..node.config import FlSettings, GroupSettings, MigrationSettings, NodeConfig, NodeEvent
from .common import (
    FiniteFloatRange,
    bootstrap_addresses,
    bootstrap_option,
    data_dir_option,
    peers_file_option,
    quiet_flower,
    run_async,
    start_web_view,
    web_option,
)

if TYPE_CHECKING:
    from ..node.node import Node


@click.command()
@bootstrap_option
@peers_file_option
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=0,
    type=click.IntRange(0, 65535),
    help="UDP port (DHT) and TCP port (models); 0 picks free ones.",
)
@click.option(
    "--advertise-host",
    help="Address other machines dial (default: the interface that reaches the bootstrap peer).",
)
@data_dir_option
@click.option("--task", default="digits", show_default=True, help="What the group learns.")
@click.option("--group", help="Join this group (name or id).")
@click.option("--create", help="Found a new group with this name.")
@click.option(
    "--capacity",
    default=10,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="With --create: most members.",
)
@click.option(
    "--policy",
    default="open",
    show_default=True,
    type=click.Choice(["open", "invite-only"]),
    help="With --create: who may join.",
)
@click.option("--invite", help="An invite (from `mycelium-p2p invite`) for an invite-only group.")
@click.option(
    "--strategy",
    default=FlSettings.strategy,
    show_default=True,
    type=click.Choice(list(STRATEGIES)),
    help="How the leader aggregates updates (every reply is screened first).",
)
@click.option(
    "--client-app",
    metavar="MODULE:ATTR",
    help="Your own Flower ClientApp (its module also defines initial_arrays()).",
)
@click.option(
    "--app",
    "app_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="A Flower App (pyproject.toml with [tool.flwr.app]): its ClientApp trains here, its "
    "ServerApp leads the group; the group's task comes from the app.",
)
@click.option(
    "--run-config",
    metavar='"K=V ..."',
    help="With --app: override the app's [tool.flwr.app.config] (Flower's syntax).",
)
@click.option(
    "--node-config",
    metavar='"K=V ..."',
    help="With --app: the ClientApp's context.node_config, "
    'e.g. "partition-id=0 num-partitions=4".',
)
@click.option(
    "--data-shard",
    default="0/1",
    show_default=True,
    metavar="I/N",
    help="This node's share of the digits data.",
)
@click.option(
    "--domain",
    default=0,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Rotate images by DOMAIN*90 degrees (or permute labels with --shift labels).",
)
@click.option(
    "--shift", default="rotate", show_default=True, type=click.Choice(["rotate", "labels"])
)
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False),
    help="Your own data: FILE.npz (arrays x, y) or FILE.csv (label last).",
)
@click.option(
    "--heartbeat",
    default=1.0,
    show_default=True,
    type=FiniteFloatRange(0.05, 60),
    help="Seconds between heartbeats.",
)
@click.option(
    "--round-pause",
    default=0.5,
    show_default=True,
    type=FiniteFloatRange(0, 3600),
    help="Seconds the leader waits between rounds.",
)
@click.option(
    "--epochs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100),
    help=f"Local epochs per round (members train at most their cap, {TrainCaps.max_local_epochs}).",
)
@click.option(
    "--lr",
    default=0.05,
    show_default=True,
    type=FiniteFloatRange(0, 10, min_open=True),
    help=f"Learning rate (members train with at most their cap, {TrainCaps.max_learning_rate}).",
)
@click.option(
    "--migrate/--no-migrate",
    default=True,
    show_default=True,
    help="Move to a group that serves this node's data better.",
)
@click.option(
    "--max-app-failures",
    default=5,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Leave the group (and exit 1) when the ClientApp fails this many calls in a row "
    "(0: never).",
)
@click.option(
    "--merge/--no-merge",
    default=True,
    show_default=True,
    help="As leader, merge this group into a larger one of its task that serves it as well.",
)
@click.option(
    "--evaluation-interval",
    default=30.0,
    show_default=True,
    type=FiniteFloatRange(0.5, 86400),
    help="Seconds between measurements of candidate groups on this node's data.",
)
@click.option(
    "--threshold",
    default=0.05,
    show_default=True,
    type=FiniteFloatRange(0, 1),
    help="Accuracy gain (0-1) on this node's data that justifies a move.",
)
@click.option(
    "--bootstrap-wait",
    default=300.0,
    show_default=True,
    type=FiniteFloatRange(0, 86400),
    help="Seconds to keep trying the bootstrap peers at start before giving up (seeds may be "
    "starting, or slow while a whole LAN of nodes starts at once).",
)
@click.option(
    "--reply-timeout",
    default=60.0,
    show_default=True,
    type=FiniteFloatRange(0.5, 3600),
    help="Seconds a leader waits for a member's training reply.",
)
@click.option(
    "--threads",
    default=0,
    type=click.IntRange(0, 256),
    help="CPU threads for torch (0: torch's default). Use 1 when many nodes share a machine.",
)
@click.option(
    "--isolation",
    default="thread",
    show_default=True,
    type=click.Choice(["thread", "process"]),
    help="Run the ClientApp in a thread of the node, or in a worker process of its own.",
)
@click.option(
    "--events",
    "events_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also append every event as a JSON line to this file.",
)
@web_option
def join(
    bootstrap: tuple[str, ...],
    peers_file: Path | None,
    host: str,
    port: int,
    advertise_host: str | None,
    data_dir: Path,
    task: str,
    group: str | None,
    create: str | None,
    capacity: int,
    policy: str,
    invite: str | None,
    strategy: str,
    client_app: str | None,
    app_dir: str | None,
    run_config: str | None,
    node_config: str | None,
    data_shard: str,
    domain: int,
    shift: str,
    data_file: str | None,
    heartbeat: float,
    round_pause: float,
    epochs: int,
    lr: float,
    migrate: bool,
    max_app_failures: int,
    merge: bool,
    evaluation_interval: float,
    threshold: float,
    bootstrap_wait: float,
    reply_timeout: float,
    threads: int,
    isolation: str,
    events_file: str | None,
    web: str | None,
) -> None:
    """Run a full node: join the network, find or found a group, train with it."""
    if group and create:
        raise click.UsageError("--group and --create exclude each other")
    if app_dir and client_app:
        raise click.UsageError("--app and --client-app exclude each other")
    if (run_config or node_config) and not app_dir:
        raise click.UsageError("--run-config and --node-config need --app")
    addrs = bootstrap_addresses(bootstrap, peers_file, required=create is None)
    from ..fl.worker import limit_torch_threads
    from ..node import run_until_signalled
    from ..node.node import Node

    options = click.get_current_context().params
    quiet_flower()
    journal = open(events_file, "a", buffering=1) if events_file else None  # noqa: SIM115

    async def main() -> None:
        config = node_config_of(options, await resolve(addrs))
        as_json = click.get_current_context().find_root().params.get("log_format") == "json"
        node = Node(config, on_event=_printer(journal, as_json))
        limit_torch_threads(threads)  # after the ClientApp is loaded: torch only if it uses it
        await run_until_signalled(lambda stop: _serve(node, stop, web))
        if node.gave_up:
            raise click.ClickException(node.gave_up)

    try:
        run_async(main())
    finally:
        if journal is not None:
            journal.close()


def _printer(journal: TextIO | None, as_json: bool = False) -> Callable[[NodeEvent], None]:
    """Print each event with its time (``as_json``: as a JSON line with the node's facts), and
    append it to the events file as JSON."""

    def event(ev: NodeEvent) -> None:
        if as_json:
            click.echo(json.dumps({**logcontext.current(), **ev.as_json(), "msg": ev.text}))
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.at))
            click.echo(f"{stamp}.{int(ev.at % 1 * 1000):03d} {ev.text}")
        if journal is not None:
            journal.write(json.dumps(ev.as_json()) + "\n")

    return event


async def _serve(node: Node, stop: asyncio.Event, web: str | None = None) -> None:
    """Start ``node`` (and its web view at ``web``), run until it ends (its app gave up) or
    ``stop`` is set, then stop it."""
    started = False
    view = None
    try:
        await node.start()
        started = True
        if web is not None:
            view = await start_web_view(node.dht, node, web)
        ended = asyncio.ensure_future(node.ended.wait())
        signalled = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ended, signalled}, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        signalled.cancel()
    finally:
        if view is not None:
            await view.close()
        await node.stop()
        if started:
            node.emit(events.STOPPED, "left the group and stopped")


def node_config_of(options: Mapping[str, Any], bootstrap: list[Address]) -> NodeConfig:
    """The ``NodeConfig`` that ``join``'s options (by click's parameter names) make: each
    option sets one field (``--bootstrap`` and ``--peers-file`` make ``bootstrap``;
    ``--events`` is the command's own). docs/cli.md lists them by section."""
    o = options
    return NodeConfig(
        bootstrap=bootstrap,
        host=o["host"],
        port=o["port"],
        advertise_host=o["advertise_host"],
        data_dir=o["data_dir"],
        task=o["task"],
        bootstrap_wait=o["bootstrap_wait"],
        group=GroupSettings(
            join=o["group"],
            create=o["create"],
            capacity=o["capacity"],
            policy=o["policy"],
            invite=o["invite"],
            heartbeat_interval=o["heartbeat"],
        ),
        fl=FlSettings(
            strategy=o["strategy"],
            client_app=o["client_app"],
            app=o["app_dir"],
            run_config=o["run_config"],
            app_node_config=o["node_config"],
            data_shard=o["data_shard"],
            domain=o["domain"],
            shift=o["shift"],
            data_file=o["data_file"],
            round_pause=o["round_pause"],
            local_epochs=o["epochs"],
            learning_rate=o["lr"],
            max_app_failures=o["max_app_failures"],
            reply_timeout=o["reply_timeout"],
            torch_threads=o["threads"],
            isolation=o["isolation"],
        ),
        migration=MigrationSettings(
            migrate=o["migrate"],
            merge=o["merge"],
            group_evaluation_interval=o["evaluation_interval"],
            performance_threshold=o["threshold"],
        ),
    )
