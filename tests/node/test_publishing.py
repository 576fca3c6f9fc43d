"""``Publisher.presence``: the signed presence record carries the node's traffic so far."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

from mycelium_p2p.identity import Identity
from mycelium_p2p.node.config import NodeConfig
from mycelium_p2p.node.publishing import Publisher
from mycelium_p2p.records import Record
from mycelium_p2p.records.kinds import MAX_INT64, HeartbeatBody
from mycelium_p2p.testing.aio import run_async


async def first_presence(traffic: tuple[int, int]) -> HeartbeatBody:
    """The body of the first presence record a publisher with ``traffic`` puts."""
    put: asyncio.Future[Record] = asyncio.get_running_loop().create_future()

    async def store(record: Record) -> int:
        if not put.done():
            put.set_result(record)
        return 1

    group = SimpleNamespace(
        group_id="ab" * 8, is_leader=False, model=SimpleNamespace(round=4, digest=bytes(32))
    )
    membership: Any = SimpleNamespace(group=group, tcp_addr=("127.0.0.1", 7000))
    runner: Any = SimpleNamespace(failures=SimpleNamespace(streak=0))
    dht: Any = SimpleNamespace(put=store)
    publisher = Publisher(
        Identity.generate(), NodeConfig(), dht, membership, runner, [], lambda: traffic
    )
    task = asyncio.ensure_future(publisher.presence())
    try:
        body = (await asyncio.wait_for(put, 10)).body
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert isinstance(body, HeartbeatBody)
    return body


@run_async(timeout=30)
async def test_presence_reports_the_bytes_received_and_sent() -> None:
    body = await first_presence((1234, 5678))
    assert (body.bytes_in, body.bytes_out) == (1234, 5678)
    assert body.round == 4 and body.role == "member"


@run_async(timeout=30)
async def test_presence_keeps_counts_in_range_whatever_it_is_given() -> None:
    body = await first_presence((2**70, -3))  # our own record must always sign
    assert (body.bytes_in, body.bytes_out) == (MAX_INT64, 0)
