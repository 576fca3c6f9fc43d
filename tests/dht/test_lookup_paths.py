"""Which paths a read's responders count for: every path that reached them, and no other.

The peers here are scripted (who each names, what it holds, how long it takes to answer) and
the lookup runs in virtual time, so each test is exact about when a read ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from kademlia.node import Node

from mycelium_p2p.dht.lookup import LookupResult, lookup
from mycelium_p2p.dht.quorum import agreed
from mycelium_p2p.dht.replies import Answer
from mycelium_p2p.records import Record
from mycelium_p2p.testing import run
from mycelium_p2p.testing.records import make_advert

TARGET = bytes(20)
STALL = 0.02  # s: a silent peer is asked around after this (unless its script says)
TIMEOUT = 1.0  # s: and given up on after this
QUORUM = 3


@dataclass
class Scripted:
    """A peer's script: answers after ``delay`` s (None: never), naming ``names`` and
    returning ``holds``; the lookup asks around it after ``stall`` s."""

    node: Node
    delay: float | None = 0.001
    stall: float = STALL
    names: list[Node] = field(default_factory=list)
    holds: list[Record] = field(default_factory=list)


def peer(distance: int, **script: Any) -> Scripted:
    """A peer whose id lies ``distance`` (at most 255) from the target, on the top byte."""
    node_id = bytes([distance]) + bytes(19)
    return Scripted(Node(node_id, "127.0.0.1", 1000 + distance), **script)


class ScriptedProtocol:
    """What ``lookup`` uses of ``MyceliumProtocol``, answering from scripts; the seeds are
    dealt to paths 0, 1, 2 in order."""

    def __init__(self, seeds: list[Scripted], others: list[Scripted]) -> None:
        self.scripts = {s.node.id: s for s in [*seeds, *others]}
        self.source_node = Node(b"\xff" * 20, "127.0.0.1", 999)
        self.router = SimpleNamespace(find_neighbors=lambda node, k: [s.node for s in seeds])
        stalls = {(s.node.ip, s.node.port): s.stall for s in self.scripts.values()}
        self.rtt = SimpleNamespace(stall_after=stalls.__getitem__)
        self.asked: list[bytes] = []

    def spawn(self, coro: Any) -> asyncio.Future[Any]:
        return asyncio.ensure_future(coro)

    def distrust(self, node: Node, *, proven: bool = True) -> None:
        pass

    async def query_records(
        self, node: Node, key: bytes, max_pages: int, on_answer: Callable[[], None] | None = None
    ) -> Answer | None:
        self.asked.append(node.id)
        script = self.scripts[node.id]
        if script.delay is None:
            await asyncio.sleep(TIMEOUT)
            return None
        await asyncio.sleep(script.delay)
        return Answer(nodes=list(script.names), blobs=[r.blob for r in script.holds])


def read(
    seeds: list[Scripted], others: list[Scripted]
) -> tuple[LookupResult, float, float | None, Callable[[bytes], Record | None]]:
    """A quorum read over three paths: its result, when it ended and when its quorum first
    held (None: never)."""
    known = {r.blob: r for s in [*seeds, *others] for r in s.holds}
    protocol = ScriptedProtocol(seeds, others)
    agreed_at: list[float] = []

    def enough(found: LookupResult) -> bool:
        ok = agreed(found, known.get, QUORUM)
        if ok:
            agreed_at.append(asyncio.get_running_loop().time())
        return ok

    async def go() -> tuple[LookupResult, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await lookup(
            protocol,  # type: ignore[arg-type]
            TARGET,
            ksize=20,
            alpha=3,
            deadline=start + 5.0,
            paths=3,
            width=30,
            records=True,
            enough=enough,
        )
        return result, loop.time() - start

    result, took = run(go())
    return result, took, (min(agreed_at) if agreed_at else None), known.get


def test_paths_that_converge_on_the_same_holders_end_once_those_agree() -> None:
    record = make_advert()
    holders = [peer(d, holds=[record]) for d in (1, 2, 3)]
    dead = [[peer(100 + 10 * p + i, delay=None) for i in range(3)] for p in (1, 2)]
    # path 0's seed answers first and so takes the holders; paths 1 and 2 are named them
    # too, and besides them only peers that have crashed
    seeds = [
        peer(50, names=[h.node for h in holders]),
        peer(51, delay=0.002, names=[*(h.node for h in holders), *(d.node for d in dead[0])]),
        peer(52, delay=0.002, names=[*(h.node for h in holders), *(d.node for d in dead[1])]),
    ]
    result, took, _, check = read(seeds, [*holders, *dead[0], *dead[1]])
    assert took < STALL, f"it waited {took * 1000:.0f} ms for crashed peers"
    assert agreed(result, check, QUORUM)
    assert {result.path_of[h.node.id] for h in holders} == {0}
    assert all(result.reached[h.node.id] == {0, 1, 2} for h in holders)


def test_sybils_named_on_one_path_get_no_vote_on_the_others() -> None:
    honest, forged = make_advert(), make_advert()  # the sybils' record: valid, but not it
    sybils = [peer(d, holds=[forged]) for d in (1, 2, 3)]  # closest to the key, and fast
    holders = [peer(d, delay=0.015, holds=[honest]) for d in (10, 11, 12, 13, 14, 15)]
    seeds = [
        peer(50, names=[h.node for h in holders[:3]]),
        peer(51, names=[s.node for s in sybils]),  # a sybil's door, on path 1
        peer(52, names=[h.node for h in holders[3:]]),
    ]
    result, _, agreed_at, _ = read(seeds, [*sybils, *holders])
    assert all(result.reached[s.node.id] == {1} for s in sybils)
    # three sybils agreed at once, but on path 1 alone: the read went on and found the record
    assert agreed_at is None or agreed_at >= 0.015
    assert any(honest.blob in blobs for blobs in result.blobs.values())


def test_what_a_condemned_peer_named_counts_no_more_for_its_path() -> None:
    record = make_advert()
    holders = [peer(d, delay=0.015, holds=[record]) for d in (1, 2, 3)]
    bogus = [peer(100 + i, delay=None, stall=0.005) for i in range(3)]  # made up: silent
    seeds = [
        peer(50, names=[h.node for h in holders]),
        # on path 1, a liar names the holders (path 0 has them) and contacts that stall
        peer(51, delay=0.002, names=[*(h.node for h in holders), *(b.node for b in bogus)]),
        peer(52, delay=0.1, stall=1.0, names=[h.node for h in holders]),
    ]
    result, _, agreed_at, check = read(seeds, [*holders, *bogus])
    assert seeds[1].node.id in {n.id for n in result.liars}
    assert all(result.reached[h.node.id] == {0, 2} for h in holders)
    assert agreed_at is None and not agreed(result, check, QUORUM)
