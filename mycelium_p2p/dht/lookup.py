"""Iterative Kademlia lookups that do not wait for the dead.

kademlia's ``SpiderCrawl`` queries ``alpha`` peers and waits for *all* of them each round, so one
dead peer stalls the whole lookup for the full timeout. Here ``alpha`` queries are kept in
flight; a query silent for longer than its peer's ``stall_after`` stops counting against
``alpha`` (it stays open, and a late answer is still used) and the next-closest peer is asked.
The lookup ends when the ``k`` closest peers not known to be dead or slow have all answered, or,
for record lookups, when ``quorum`` peers have returned valid records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from kademlia.node import Node

from .protocol import MyceliumProtocol


class _State(Enum):
    NEW = 0
    PENDING = 1
    SLOW = 2
    DONE = 3
    FAILED = 4


@dataclass
class LookupResult:
    """What a lookup learned: the closest responders and, for record lookups, their blobs."""

    closest: list[Node]
    blobs: dict[bytes, list[bytes]] = field(default_factory=dict)  # responder id -> blobs
    responders: dict[bytes, Node] = field(default_factory=dict)
    queried: int = 0


async def lookup(
    protocol: MyceliumProtocol,
    target: bytes,
    *,
    ksize: int,
    alpha: int,
    deadline: float,
    records: bool = False,
    quorum: int = 0,
    max_pages: int = 32,
    count_valid: Callable[[list[bytes]], int] = len,
) -> LookupResult:
    """Find the ``ksize`` closest live nodes to ``target`` (and, with ``records``, its records).

    ``count_valid`` tells how many of a responder's blobs are valid; only responders with at
    least one count toward ``quorum``.
    """
    loop = asyncio.get_running_loop()
    target_id = int.from_bytes(target, "big")
    known: dict[bytes, Node] = {}
    state: dict[bytes, _State] = {}
    stall_at: dict[bytes, float] = {}
    in_flight: dict[asyncio.Future[object], Node] = {}
    result = LookupResult(closest=[])
    paging: set[bytes] = set()
    with_records = 0

    def learn(nodes: list[Node]) -> None:
        for node in nodes:
            if node.id not in known and node.id != protocol.source_node.id:
                known[node.id] = node
                state[node.id] = _State.NEW

    def launch(node: Node) -> None:
        if records:  # a peer paging its answer is answering, not stalled
            coro = protocol.query_records(
                node, target, max_pages, on_answer=lambda: paging.add(node.id)
            )
        else:
            coro = protocol.query_nodes(node, target)
        task = protocol.spawn(coro)
        in_flight[task] = node
        state[node.id] = _State.PENDING
        stall_at[node.id] = loop.time() + protocol.rtt.stall_after((node.ip, node.port))
        result.queried += 1

    learn(protocol.router.find_neighbors(Node(target), k=ksize))
    while True:
        now = loop.time()
        if (quorum and with_records >= quorum) or now >= deadline:
            break
        for node in in_flight.values():
            if node.id in paging:  # answering (even if its first page came late): wait for it
                state[node.id] = _State.PENDING
            elif state[node.id] is _State.PENDING and now >= stall_at[node.id]:
                state[node.id] = _State.SLOW
        usable = [n for n in known.values() if state[n.id] not in (_State.FAILED, _State.SLOW)]
        candidates = sorted(usable, key=lambda n: n.long_id ^ target_id)[:ksize]
        active = sum(1 for n in in_flight.values() if state[n.id] is _State.PENDING)
        for node in candidates:
            if active >= alpha:
                break
            if state[node.id] is _State.NEW:
                launch(node)
                active += 1
        if active == 0 and (candidates or not in_flight):
            break  # every close usable peer answered (or nobody is left to wait for)
        waits = [
            stall_at[n.id]
            for n in in_flight.values()
            if state[n.id] is _State.PENDING and n.id not in paging
        ]
        timeout = (min(waits) if waits else deadline) - now
        done, _ = await asyncio.wait(
            list(in_flight), timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            node = in_flight.pop(task)
            answer = None if task.cancelled() else task.result()
            if answer is None:
                state[node.id] = _State.FAILED
                continue
            state[node.id] = _State.DONE
            result.responders[node.id] = node
            if records:
                blobs, nodes = answer  # type: ignore[misc]
                if blobs:
                    result.blobs[node.id] = blobs
                    if count_valid(blobs) > 0:
                        with_records += 1
                learn(nodes)
            else:
                learn(answer)  # type: ignore[arg-type]
    done_nodes = [n for n in known.values() if state[n.id] is _State.DONE]
    result.closest = sorted(done_nodes, key=lambda n: n.long_id ^ target_id)[:ksize]
    return result
