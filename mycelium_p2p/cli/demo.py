"""``mycelium-p2p demo``: a whole local network on loopback, live in the terminal.

This version shows the registry layer: peers join a DHT, groups advertise signed adverts,
peers are killed and replaced, and the adverts of groups whose owner died expire from the
index. Every number on screen is measured from real lookups.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ..dht import DhtConfig, DhtNode, fetch_adverts
from ..identity import Identity
from ..records import GroupMetrics, Record, next_seq, sign_advert
from .render import groups_table

ADVERT_TTL = 8.0
REPUBLISH_EVERY = 2.0


@dataclass
class _Owner:
    """A group advertised by one peer; it disappears when that peer dies."""

    name: str
    identity: Identity
    peer: DhtNode
    seq: int = 0
    died_at: float | None = None

    def advert(self) -> Record:
        self.seq = next_seq(self.seq, time.time())
        host, port = self.peer.address
        return sign_advert(
            self.identity,
            name=self.name,
            task="digits",
            leader=(host, port),
            leader_key=self.peer.identity.public_key,
            term=1,
            policy="open",
            metrics=GroupMetrics(capacity=10),
            seq=self.seq,
            now=time.time(),
            ttl=ADVERT_TTL,
        )


@dataclass
class _Stats:
    lookups: int = 0
    failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    kills: int = 0
    joins: int = 0
    expiries: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')}  {text}")


async def run_registry_demo(
    *, peers: int, groups: int, duration: float, kill_every: float, seed: int, console: Console
) -> _Stats:
    """Run the demo network for ``duration`` seconds and return what was measured."""
    rng = random.Random(seed)
    config = DhtConfig(maintenance_interval=1.0)
    stats = _Stats()
    nodes: list[DhtNode] = []

    async def start_peer() -> DhtNode:
        node = DhtNode(config=config)
        await node.listen(0, "127.0.0.1")
        if nodes:
            await node.bootstrap([nodes[0].address])
        nodes.append(node)
        return node

    for _ in range(peers):
        await start_peer()
    owners = [
        _Owner(f"group-{i}", Identity.generate(), nodes[1 + i % (peers - 1)]) for i in range(groups)
    ]
    tasks = {o.name: o.peer.keep_published(o.advert, REPUBLISH_EVERY) for o in owners}
    stats.log(
        f"{peers} peers joined; {groups} groups advertising (adverts live {ADVERT_TTL:.0f} s)"
    )

    def view(adverts: list) -> Group:
        latency = (
            f"p50 {statistics.median(stats.latencies_ms):.1f} ms" if stats.latencies_ms else "-"
        )
        head = Table.grid(padding=(0, 2))
        head.add_row(
            f"peers alive [bold]{len(nodes)}[/]",
            f"kills {stats.kills}",
            f"lookups {stats.lookups} ({stats.failures} failed)",
            f"lookup {latency}",
        )
        return Group(
            Panel(head, title="mycelium-p2p demo: the registry"),
            groups_table(adverts),
            Panel("\n".join(stats.events[-8:]), title="events"),
        )

    reader = DhtNode(read_only=True, config=config)
    await reader.listen(0, "127.0.0.1")
    await reader.bootstrap([nodes[0].address])
    start = time.monotonic()
    next_kill = start + kill_every
    try:
        with Live(view([]), console=console, refresh_per_second=4) as live:
            while time.monotonic() - start < duration:
                t0 = time.perf_counter()
                try:
                    adverts = await asyncio.wait_for(fetch_adverts(reader), 5.0)
                    stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
                except asyncio.TimeoutError:
                    adverts, stats.failures = [], stats.failures + 1
                stats.lookups += 1
                listed = {a.name for a in adverts}
                for owner in owners:
                    if owner.died_at is not None and owner.name not in listed:
                        gone = time.monotonic() - owner.died_at
                        stats.expiries.append(gone)
                        stats.log(f"{owner.name} left the index {gone:.1f} s after its owner died")
                        owner.died_at = None
                        owners.remove(owner)
                if time.monotonic() >= next_kill and len(nodes) > 3:
                    next_kill += kill_every
                    victim = rng.choice(nodes[1:])
                    victim.stop()
                    nodes.remove(victim)
                    stats.kills += 1
                    owned = [o for o in owners if o.peer is victim]
                    for owner in owned:
                        owner.died_at = time.monotonic()
                        tasks.pop(owner.name).cancel()
                    note = f" (owner of {owned[0].name})" if owned else ""
                    stats.log(f"killed peer {victim.node.id.hex()[:8]}{note}")
                    newcomer = await start_peer()
                    stats.joins += 1
                    stats.log(f"peer {newcomer.node.id.hex()[:8]} joined")
                live.update(view(adverts))
                await asyncio.sleep(1.0)
    finally:
        for node in [reader, *nodes]:
            await node.close()
    return stats


def summary_table(stats: _Stats, groups: int) -> Table:
    table = Table(title="demo summary", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    lat = sorted(stats.latencies_ms) or [0.0]
    table.add_row("index lookups", f"{stats.lookups} ({stats.failures} failed)")
    table.add_row("lookup p50 / max", f"{lat[len(lat) // 2]:.1f} / {lat[-1]:.1f} ms")
    table.add_row("peers killed / joined", f"{stats.kills} / {stats.joins}")
    table.add_row("groups whose owner died", f"{len(stats.expiries)} of {groups}")
    if stats.expiries:
        table.add_row("time until they left the index", f"max {max(stats.expiries):.1f} s")
    return table
