"""The ``mycelium-p2p`` command line."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from pathlib import Path
from typing import Any

import click

from ..addresses import parse_address, resolve
from ..errors import ConfigError, MyceliumError, StoppedAbruptly
from ..identity import Identity
from ..logcontext import JsonFormatter
from .common import (
    DEFAULT_PORT,
    FiniteFloatRange,
    bootstrap_addresses,
    bootstrap_option,
    data_dir_option,
    peers_file_option,
    run_async,
    start_web_view,
    web_option,
)
from .join import join
from .query import groups, id_, invite, nodes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Cli(click.Group):
    """Turns our errors into one line on stderr and a non-zero exit: never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StoppedAbruptly as exc:
            click.echo(f"Stopped: {exc}", err=True)
            raise click.exceptions.Exit(130) from None
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
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # or not UTF-8
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    for command, table in data.items():
        for key, value in table.items() if isinstance(table, dict) else ():
            problem = _setting_problem(ctx.command, command, key, value)
            if problem:
                raise click.BadParameter(f"{path}: [{command}] {key} = {value!r} {problem}")
    ctx.default_map = {
        command: {key.replace("-", "_"): value for key, value in table.items()}
        for command, table in data.items()
        if isinstance(table, dict)
    }


def _setting_problem(root: click.Command, command: str, key: str, value: Any) -> str | None:
    """Why a config value cannot be an option's default, or None. Click converts what it is
    given, but a list or a date where it wants a number is a TypeError, inf an OverflowError,
    and NaN passes every range check."""
    sub = root.commands.get(command) if isinstance(root, click.Group) else None
    name = key.replace("-", "_")
    param = next((p for p in sub.params if p.name == name), None) if sub else None
    many = param is not None and (getattr(param, "multiple", False) or param.nargs != 1)
    values = value if many and isinstance(value, list) else [value]
    for item in values:
        if not isinstance(item, (str, int, float)):
            return f"is not {'a list of values' if many else 'a single value'}"
        if isinstance(item, float) and not math.isfinite(item):
            return "is not a finite number"
        if param is not None and isinstance(param.type, click.Path) and not isinstance(item, str):
            return "is not a path"
    return None


def _setup_logging(verbose: int, log_format: str = "text") -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if verbose < 2:
        # kademlia logs every unanswered request as a warning; dead peers are routine here.
        logging.getLogger("kademlia").setLevel(logging.ERROR)
        logging.getLogger("rpcudp").setLevel(logging.ERROR)
        logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower logs every round at INFO


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
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line (time, level, logger, msg; node, group, term, round), "
    "for logs and join's events alike.",
)
def cli(verbose: int, log_format: str) -> None:
    """mycelium-p2p: federated-learning groups on a peer-to-peer network."""
    _setup_logging(verbose, log_format)


for _command in (join, groups, nodes, id_, invite):
    cli.add_command(_command)


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
@web_option
def bootstrap(
    host: str,
    port: int,
    bootstrap: tuple[str, ...],
    peers_file: Path | None,
    data_dir: Path,
    web: str | None,
) -> None:
    """Run a long-lived seed peer (DHT only) until SIGINT/SIGTERM."""
    from ..node import DataDirLock, run_seed

    peers = bootstrap_addresses(bootstrap, peers_file, required=False)
    with DataDirLock(data_dir):
        identity = Identity.load_or_create(data_dir)

        async def view(dht: Any) -> Any:
            return (await start_web_view(dht, None, web)).close if web else None

        async def main() -> None:
            beside = view if web else None
            await run_seed(
                identity, host, port, await resolve(peers), data_dir=data_dir, beside=beside
            )

        run_async(main())


@cli.command()
@bootstrap_option
@peers_file_option
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Where to serve the page (loopback unless you name another address).",
)
def web(bootstrap: tuple[str, ...], peers_file: Path | None, listen: str) -> None:
    """Serve a read-only web view of the network (and /metrics) from a DHT reader alone."""
    from ..node import run_until_signalled
    from ..node.seed import dht_client

    addrs = bootstrap_addresses(bootstrap, peers_file, required=True)

    async def main() -> None:
        async with dht_client(await resolve(addrs)) as dht:
            view = await start_web_view(dht, None, listen)

            async def serve(stop: asyncio.Event) -> None:
                await stop.wait()

            try:
                await run_until_signalled(serve)
            finally:
                await view.close()

    run_async(main())


@cli.command()
@click.option("--nodes", default=12, show_default=True, type=click.IntRange(2, 64))
@click.option("--domains", default=3, show_default=True, type=click.IntRange(1, 8))
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=FiniteFloatRange(5, 3600),
    help="Seconds of training once the groups are founded.",
)
@click.option(
    "--evaluation-interval",
    default=5.0,
    show_default=True,
    type=FiniteFloatRange(0.5, 600),
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
@click.option(
    "--web",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT",
    help="Serve the network's web view here (port 0: any free one); its URL is printed.",
)
@click.option("--no-web", is_flag=True, help="No web view.")
@click.option("--open", "open_browser", is_flag=True, help="Open the web view in a browser.")
def demo(
    nodes: int,
    domains: int,
    duration: float,
    evaluation_interval: float,
    kill_leader: bool,
    out: str,
    live: bool,
    seed: int,
    web: str,
    no_web: bool,
    open_browser: bool,
) -> None:
    """Run a whole network of node processes on loopback and watch groups form and migrate."""
    from rich.console import Console

    from ..node import run_until_signalled
    from .demo import DemoConfig, run_demo
    from .demo_view import summary_table

    if not no_web:
        try:
            parse_address(web, any_port=True)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--web") from None
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
        web=None if no_web else web,
        open_browser=open_browser,
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
