"""The ``mycelium-p2p`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..addresses import Address, parse_address, read_peers_file, resolve
from ..errors import ConfigError, MyceliumError, NetworkError
from ..identity import Identity, default_data_dir, node_id_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PORT = 8468


class _Cli(click.Group):
    """Turns our errors into one line on stderr and a non-zero exit: never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MyceliumError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}") from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


def _load_config(ctx: click.Context, _param: click.Parameter, path: str | None) -> None:
    """``--config FILE``: a TOML file whose ``[command]`` tables give option defaults."""
    if path is None:
        return
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    ctx.default_map = {
        command: {key.replace("-", "_"): value for key, value in table.items()}
        for command, table in data.items()
        if isinstance(table, dict)
    }


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        # kademlia logs every unanswered request as a warning; dead peers are routine here.
        logging.getLogger("kademlia").setLevel(logging.ERROR)
        logging.getLogger("rpcudp").setLevel(logging.ERROR)
        logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower logs every round at INFO


def quiet_flower() -> None:
    """Flower logs every round at INFO through its own handler; keep warnings only."""
    flwr_log = logging.getLogger("flwr")
    if flwr_log.getEffectiveLevel() < logging.WARNING and not logging.getLogger().isEnabledFor(
        logging.INFO
    ):
        flwr_log.setLevel(logging.WARNING)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mycelium-p2p")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="TOML file with option defaults per command (see bootstrap/mycelium.toml).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """mycelium-p2p: federated-learning groups on a peer-to-peer network."""
    _setup_logging(verbose)


# -- shared options -------------------------------------------------------------------------

bootstrap_option = click.option(
    "--bootstrap",
    "-b",
    "bootstrap",
    multiple=True,
    envvar="MYCELIUM_BOOTSTRAP",
    metavar="HOST:PORT",
    help="A bootstrap peer (repeatable; env MYCELIUM_BOOTSTRAP, space-separated).",
)
peers_file_option = click.option(
    "--peers-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file of bootstrap peers, one HOST:PORT per line (see bootstrap/peers.example).",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_data_dir,
    show_default="$MYCELIUM_DATA_DIR or ~/.local/share/mycelium-p2p",
    help="Where this node keeps its key (one directory per node).",
)


def bootstrap_addresses(
    bootstrap: Sequence[str], peers_file: Path | None, *, required: bool
) -> list[Address]:
    """Parse ``--bootstrap`` values and a peers file into (host, port) pairs."""
    try:
        addrs = [parse_address(text, DEFAULT_PORT) for text in bootstrap]
        if peers_file is not None:
            addrs += read_peers_file(peers_file, DEFAULT_PORT)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--bootstrap/--peers-file") from None
    if required and not addrs:
        raise click.UsageError("give at least one --bootstrap HOST:PORT (or --peers-file FILE)")
    return addrs


def run_async(coro: Any) -> Any:
    """Run a coroutine; Ctrl-C ends it quietly."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None


async def with_timeout(coro: Any, seconds: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise NetworkError(f"{what}: no answer within {seconds:g} s") from None


# -- commands ---------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="UDP port of the DHT.",
)
@bootstrap_option
@peers_file_option
@data_dir_option
def bootstrap(
    host: str, port: int, bootstrap: tuple[str, ...], peers_file: Path | None, data_dir: Path
) -> None:
    """Run a long-lived seed peer (DHT only) until SIGINT/SIGTERM."""
    from ..node import DataDirLock, run_seed

    peers = bootstrap_addresses(bootstrap, peers_file, required=False)
    with DataDirLock(data_dir):
        identity = Identity.load_or_create(data_dir)

        async def main() -> None:
            await run_seed(identity, host, port, await resolve(peers))

        run_async(main())


@cli.command()
@bootstrap_option
@peers_file_option
@click.option("--task", help="Only groups learning this task.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one document per refresh).")
@click.option("--watch", is_flag=True, help="Keep refreshing until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--count", default=0, type=click.IntRange(0), help="With --watch: stop after N.")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Seconds to wait for the network.",
)
def groups(
    bootstrap: tuple[str, ...],
    peers_file: Path | None,
    task: str | None,
    as_json: bool,
    watch: bool,
    interval: float,
    count: int,
    timeout: float,
) -> None:
    """List groups and their verified metrics."""
    from rich.console import Console
    from rich.live import Live

    from ..dht import fetch_adverts
    from ..node import dht_client
    from .render import groups_table

    addrs = bootstrap_addresses(bootstrap, peers_file, required=True)
    console = Console()

    def emit_json(adverts: list[Any]) -> None:
        click.echo(json.dumps([a.to_json() for a in adverts]))

    async def main() -> None:
        async with dht_client(await resolve(addrs), timeout=timeout) as dht:
            if not watch:
                adverts = await with_timeout(fetch_adverts(dht, task), timeout, "group lookup")
                emit_json(adverts) if as_json else console.print(groups_table(adverts))
                return
            with contextlib.ExitStack() as stack:
                live = None if as_json else stack.enter_context(Live(console=console))
                for n in itertools.count(1) if count == 0 else range(1, count + 1):
                    if n > 1:
                        await asyncio.sleep(interval)
                    try:
                        adverts = await with_timeout(fetch_adverts(dht, task), timeout, "lookup")
                    except NetworkError as exc:  # watching goes on through a bad moment
                        click.echo(f"lookup failed: {exc}", err=True)
                        continue
                    if live is None:
                        emit_json(adverts)
                    else:
                        live.update(groups_table(adverts))

    run_async(main())


@cli.command()
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
    default="fedavg",
    show_default=True,
    type=click.Choice(["fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum"]),
)
@click.option(
    "--client-app",
    metavar="MODULE:ATTR",
    help="Your own Flower ClientApp (its module also defines initial_arrays()).",
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
    type=click.FloatRange(0.05, 60),
    help="Seconds between heartbeats.",
)
@click.option(
    "--round-pause",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds the leader waits between rounds.",
)
@click.option(
    "--epochs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Local epochs per round.",
)
@click.option("--lr", default=0.05, show_default=True, type=click.FloatRange(0, 10, min_open=True))
@click.option(
    "--migrate/--no-migrate",
    default=True,
    show_default=True,
    help="Move to a group that serves this node's data better.",
)
@click.option(
    "--evaluation-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.5, 86400),
    help="Seconds between measurements of candidate groups on this node's data.",
)
@click.option(
    "--threshold",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Accuracy gain (0-1) on this node's data that justifies a move.",
)
@click.option(
    "--reply-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.5, 3600),
    help="Seconds a leader waits for a member's training reply.",
)
@click.option(
    "--threads",
    default=0,
    type=click.IntRange(0, 256),
    help="CPU threads for torch (0: torch's default). Use 1 when many nodes share a machine.",
)
@click.option(
    "--events",
    "events_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also append every event as a JSON line to this file.",
)
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
    data_shard: str,
    domain: int,
    shift: str,
    data_file: str | None,
    heartbeat: float,
    round_pause: float,
    epochs: int,
    lr: float,
    migrate: bool,
    evaluation_interval: float,
    threshold: float,
    reply_timeout: float,
    threads: int,
    events_file: str | None,
) -> None:
    """Run a full node: join the network, find or found a group, train with it."""
    if group and create:
        raise click.UsageError("--group and --create exclude each other")
    addrs = bootstrap_addresses(bootstrap, peers_file, required=create is None)
    from ..node import run_until_signalled
    from ..node.node import Node, NodeConfig, NodeEvent

    quiet_flower()
    if threads:
        import torch

        torch.set_num_threads(threads)
    journal = open(events_file, "a", buffering=1) if events_file else None  # noqa: SIM115

    def event(ev: NodeEvent) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev.at))
        click.echo(f"{stamp}.{int(ev.at % 1 * 1000):03d} {ev.text}")
        if journal is not None:
            journal.write(json.dumps(ev.as_json()) + "\n")

    async def main() -> None:
        config = NodeConfig(
            bootstrap=await resolve(addrs),
            host=host,
            port=port,
            advertise_host=advertise_host,
            data_dir=data_dir,
            task=task,
            group=group,
            create=create,
            capacity=capacity,
            policy=policy,
            invite=invite,
            strategy=strategy,
            client_app=client_app,
            data_shard=data_shard,
            domain=domain,
            shift=shift,
            data_file=data_file,
            heartbeat_interval=heartbeat,
            round_pause=round_pause,
            local_epochs=epochs,
            learning_rate=lr,
            migrate=migrate,
            group_evaluation_interval=evaluation_interval,
            performance_threshold=threshold,
            reply_timeout=reply_timeout,
        )
        node = Node(config, on_event=event)

        async def serve(stop: asyncio.Event) -> None:
            try:
                await node.start()
                await stop.wait()
            finally:
                await node.stop()
                node.emit("stopped", "left the group and stopped")

        await run_until_signalled(serve)

    try:
        run_async(main())
    finally:
        if journal is not None:
            journal.close()


@cli.command()
@click.option("--group", "group_ref", required=True, help="The group's id (or its unique prefix).")
@click.option(
    "--node-key",
    required=True,
    help="The invited node's public key (hex), as `mycelium-p2p id` prints it.",
)
@click.option(
    "--ttl",
    default=86400.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds the invite stays valid.",
)
@data_dir_option
def invite(group_ref: str, node_key: str, ttl: float, data_dir: Path) -> None:
    """Issue an invite into an invite-only group this node belongs to."""
    from ..group.invite import issue_invite

    try:
        member_key = bytes.fromhex(node_key)
    except ValueError:
        raise click.BadParameter("not hex", param_hint="--node-key") from None
    if len(member_key) != 32:
        raise click.BadParameter("a node key is 64 hex digits", param_hint="--node-key")
    keys = sorted((data_dir / "groups").glob(f"{group_ref}*.key"))
    if len(keys) != 1:
        known = ", ".join(p.stem for p in sorted((data_dir / "groups").glob("*.key"))) or "none"
        reason = "matches several groups" if keys else "is not a group this node belongs to"
        raise click.ClickException(f"--group {group_ref} {reason} (known here: {known})")
    group_key = Identity.load(keys[0])
    click.echo(issue_invite(group_key, member_key, now=time.time(), ttl=ttl))


@cli.command()
@bootstrap_option
@peers_file_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1))
def nodes(
    bootstrap: tuple[str, ...], peers_file: Path | None, as_json: bool, timeout: float
) -> None:
    """List nodes with their group and role (from their signed heartbeats)."""
    from rich.console import Console

    from ..dht import fetch_adverts
    from ..node import dht_client
    from ..records import record_key, roster_topic
    from .render import nodes_table

    addrs = bootstrap_addresses(bootstrap, peers_file, required=True)

    async def main() -> list[dict[str, Any]]:
        async with dht_client(await resolve(addrs), timeout=timeout) as dht:
            adverts = await with_timeout(fetch_adverts(dht), timeout, "group lookup")
            rosters = await with_timeout(
                asyncio.gather(
                    *(dht.get_records(record_key(roster_topic(a.group_id))) for a in adverts)
                ),
                timeout,
                "roster lookup",
            )
        rows = []
        for advert, records in zip(adverts, rosters, strict=True):
            for r in records:
                rows.append(
                    {
                        "node_id": node_id_for(r.signer).hex(),
                        "group": advert.name,
                        "group_id": advert.group_id,
                        "role": r.body["role"],
                        "round": r.body["round"],
                        "addr": f"{r.body['addr'][0]}:{r.body['addr'][1]}",
                    }
                )
        return sorted(rows, key=lambda row: (row["group"], row["role"] != "leader", row["node_id"]))

    rows = run_async(main())
    if as_json:
        click.echo(json.dumps(rows))
    else:
        Console().print(nodes_table(rows))


@cli.command("id")
@data_dir_option
@click.option("--json", "as_json", is_flag=True)
def id_(data_dir: Path, as_json: bool) -> None:
    """Show this node's id and public key (creating the key on first use)."""
    identity = Identity.load_or_create(data_dir)
    info = {
        "node_id": identity.node_id.hex(),
        "public_key": identity.public_key.hex(),
        "data_dir": str(data_dir),
    }
    if as_json:
        click.echo(json.dumps(info))
    else:
        for key, value in info.items():
            click.echo(f"{key:<11} {value}")


@cli.command()
@click.option("--nodes", default=12, show_default=True, type=click.IntRange(2, 64))
@click.option("--domains", default=3, show_default=True, type=click.IntRange(1, 8))
@click.option(
    "--duration",
    default=90.0,
    show_default=True,
    type=click.FloatRange(5, 3600),
    help="Seconds of training once the groups are founded.",
)
@click.option(
    "--evaluation-interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.5, 600),
    help="Seconds between each node's measurements of other groups.",
)
@click.option(
    "--kill-leader/--no-kill-leader",
    default=True,
    show_default=True,
    help="SIGKILL one leader halfway (and restart it 10 s later).",
)
@click.option(
    "--out",
    default="mycelium-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the summary, plot, logs and event files go.",
)
@click.option("--live/--no-live", default=True, show_default=True, help="The live terminal view.")
@click.option("--seed", default=0, show_default=True, help="Random seed (which leader dies).")
def demo(
    nodes: int,
    domains: int,
    duration: float,
    evaluation_interval: float,
    kill_leader: bool,
    out: str,
    live: bool,
    seed: int,
) -> None:
    """Run a whole network of node processes on loopback and watch groups form and migrate."""
    from rich.console import Console

    from ..node import run_until_signalled
    from .demo import DemoConfig, run_demo, summary_table

    console = Console()
    config = DemoConfig(
        nodes=nodes,
        domains=domains,
        duration=duration,
        evaluation_interval=evaluation_interval,
        kill_leader=kill_leader,
        seed=seed,
        out=Path(out),
        live=live,
    )
    result: dict[str, Any] = {}

    async def serve(stop: asyncio.Event) -> None:
        result.update(await run_demo(config, console, stop))

    run_async(run_until_signalled(serve))
    console.print(summary_table(result))
    console.print(f"plot: {result['plot']}   summary: {Path(out) / 'summary.json'}")
    alive = [name for name, code in result["exit_codes"].items() if code is None]
    if alive:
        raise click.ClickException(f"processes still running: {', '.join(alive)}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mycelium-p2p")
