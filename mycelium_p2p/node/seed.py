"""Seed peers and one-shot queries: DHT-only uses of a node."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from ..addresses import Address
from ..dht import DhtConfig, DhtNode, fetch_adverts
from ..errors import BootstrapError, NetworkError
from ..identity import Identity
from ..records import GroupAdvert
from .contacts import keep_contacts, load_contacts, remember_contacts
from .lifecycle import run_until_signalled

log = logging.getLogger(__name__)

#: run beside a seed, given its DHT peer; returns how to close what it started
Beside = Callable[[DhtNode], Awaitable[Callable[[], Awaitable[None]]]]


def wildcard_for(addrs: Sequence[Address]) -> str:
    """The wildcard interface matching the bootstrap peers' address family."""
    if addrs and ipaddress.ip_address(addrs[0][0]).version == 6:
        return "::"
    return "0.0.0.0"


async def run_seed(
    identity: Identity,
    host: str,
    port: int,
    peers: Sequence[Address] = (),
    config: DhtConfig | None = None,
    data_dir: Path | None = None,
    beside: Beside | None = None,
) -> None:
    """Serve as a long-lived DHT-only peer until SIGINT/SIGTERM. With ``data_dir``, its
    contacts are kept there: a restarted seed knows the network again at once, instead of
    nobody until peers happen to ask it something. ``beside``: something to run with the
    seed's DHT peer once it is up (a web view); it returns how to close it."""

    async def main(stop: asyncio.Event) -> None:
        dht = DhtNode(identity, config)
        await dht.listen(port, host)
        hints = load_contacts(data_dir) if data_dir is not None else []
        try:
            if peers or hints:
                try:
                    await dht.bootstrap(peers, hints)
                except BootstrapError as exc:
                    # A seed must come up even if its fellow seeds are down; it retries alone.
                    log.warning("%s; serving alone until one appears", exc)
            if data_dir is not None:
                dht.tasks.spawn(keep_contacts(dht, data_dir), name="contacts")
            bound = dht.address
            print(
                f"seed peer {identity.node_id.hex()} listening on udp {bound[0]}:{bound[1]}",
                flush=True,
            )
            close = await beside(dht) if beside is not None else None
            try:
                await stop.wait()
            finally:
                if close is not None:
                    await close()
        finally:
            if data_dir is not None:
                remember_contacts(dht, data_dir)
            await dht.close()
        print("seed peer stopped", flush=True)

    await run_until_signalled(main)


@contextlib.asynccontextmanager
async def dht_client(
    bootstrap: Sequence[Address], config: DhtConfig | None = None, timeout: float = 10.0
) -> AsyncIterator[DhtNode]:
    """A read-only DHT peer joined through ``bootstrap``; others never route through it."""
    dht = DhtNode(Identity.generate(), config, read_only=True)
    await dht.listen(0, wildcard_for(bootstrap))
    try:
        try:
            await asyncio.wait_for(dht.bootstrap(bootstrap), timeout)
        except asyncio.TimeoutError:
            listed = ", ".join(f"{h}:{p}" for h, p in bootstrap)
            raise NetworkError(
                f"no bootstrap peer answered within {timeout:g} s ({listed})"
            ) from None
        yield dht
    finally:
        await dht.close()


async def query_groups(
    bootstrap: Sequence[Address], task: str | None = None, timeout: float = 10.0
) -> list[GroupAdvert]:
    """Every advertised group, verified, as seen through the given bootstrap peers."""
    async with dht_client(bootstrap, timeout=timeout) as dht:
        return await fetch_adverts(dht, task)
