"""What the commands share: options, bootstrap addresses, running coroutines, timeouts."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..addresses import Address, parse_address, read_peers_file
from ..errors import ConfigError, NetworkError
from ..identity import default_data_dir

DEFAULT_PORT = 8468


def quiet_flower() -> None:
    """Flower logs every round at INFO through its own handler; keep warnings only."""
    flwr_log = logging.getLogger("flwr")
    if flwr_log.getEffectiveLevel() < logging.WARNING and not logging.getLogger().isEnabledFor(
        logging.INFO
    ):
        flwr_log.setLevel(logging.WARNING)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities (NaN passes every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


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


def reading_time(timeout: float) -> float:
    """How long a listing reads within a command's ``timeout``: it then shows what it read
    (some shards from fewer peers) instead of failing, with time left to verify and print."""
    return timeout * 0.8


async def with_timeout(coro: Any, seconds: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise NetworkError(f"{what}: no answer within {seconds:g} s") from None


web_option = click.option(
    "--web",
    metavar="HOST:PORT",
    help="Serve a read-only web view, its state (/api/state) and Prometheus metrics (/metrics) "
    "here, e.g. 127.0.0.1:8080. Loopback unless you name another address.",
)


async def start_web_view(dht: Any, node: Any, where: str) -> Any:
    """Start a ``WebView`` of ``node`` (or of ``dht`` alone) at ``where`` (HOST:PORT)."""
    from ..addresses import parse_address
    from ..errors import ConfigError
    from ..web import WebView

    try:
        host, port = parse_address(where, any_port=True)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--web") from None
    view = WebView(dht, node)
    try:
        bound = await view.start(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot serve the web view on {where}: {exc}") from None
    host_text = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    click.echo(f"web view on http://{host_text}:{bound[1]}/ (metrics: /metrics)")
    return view
