"""Shared fixtures: signed adverts, and swarms of DHT peers on loopback in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import wraps
from typing import Any

import msgpack

from mycelium_p2p.dht import DhtConfig, DhtNode
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import GroupAdvert, GroupMetrics, Record, sign_advert
from mycelium_p2p.records.charter import GroupCharter
from mycelium_p2p.records.envelope import RECORD_DOMAIN
from mycelium_p2p.records.leadership import founding_cert

logging.getLogger("kademlia").setLevel(logging.ERROR)


def run_async(timeout: float = 60.0) -> Callable[..., Callable[..., None]]:
    """Run an ``async def`` test in a fresh event loop, failing it after ``timeout`` s."""

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout))

        return wrapper

    return decorate


def make_advert(
    leader: Identity | None = None,
    *,
    seq: int = 1,
    now: float | None = None,
    ttl: float = 60.0,
    name: str = "g",
    task: str = "digits",
    accuracy: float = 0.5,
    members: int = 1,
    policy: str = "open",
    round_: int = 3,
    address: tuple[str, int] = ("127.0.0.1", 9000),
) -> Record:
    """A new group's advert: ``leader`` founded it and leads term 1."""
    leader = leader or Identity.generate()
    now = time.time() if now is None else now
    # the same leader and name: the same group (and so the same DHT key), whatever the time
    nonce = hashlib.sha256(leader.public_key + name.encode()).digest()[:8]
    charter = GroupCharter.found(
        leader, name=name, task=task, policy=policy, now=1.7e9, nonce=nonce
    )
    return sign_advert(
        leader,
        charter=charter,
        cert=founding_cert(leader, charter.group_id),
        address=address,
        metrics=GroupMetrics(
            accuracy=accuracy, loss=1.0, round=round_, members=members, capacity=10
        ),
        seq=seq,
        now=now,
        ttl=ttl,
    )


def group_id_of_advert(record: Record) -> str:
    return GroupAdvert.from_record(record).group_id


def resign(identity: Identity, payload: dict[str, Any]) -> bytes:
    """Encode and sign an arbitrary payload, bypassing ``sign_record``'s own checks."""
    raw = msgpack.packb(payload, use_bin_type=True)
    return msgpack.packb([raw, identity.sign(RECORD_DOMAIN + raw)], use_bin_type=True)


def payload_of(blob: bytes) -> dict[str, Any]:
    raw, _ = msgpack.unpackb(blob, raw=False)
    return msgpack.unpackb(raw, raw=False)


def tampered(record: Record, accuracy: float) -> bytes:
    """The record with its accuracy changed and its original signature kept."""
    _, sig = msgpack.unpackb(record.blob, raw=False)
    payload = payload_of(record.blob)
    payload["body"]["metrics"]["accuracy"] = accuracy
    return msgpack.packb([msgpack.packb(payload), sig])


FAST = DhtConfig(maintenance_interval=0.5)


@contextlib.asynccontextmanager
async def swarm(n: int, config: DhtConfig = FAST) -> AsyncIterator[list[DhtNode]]:
    """``n`` joined DHT peers on 127.0.0.1; the first is everyone's bootstrap peer."""
    nodes = [DhtNode(config=config) for _ in range(n)]
    try:
        for node in nodes:
            await node.listen(0, "127.0.0.1")
        seed = nodes[0].address
        for start in range(1, n, 25):  # join in batches, as peers arrive in real life
            await asyncio.gather(*(node.bootstrap([seed]) for node in nodes[start : start + 25]))
        yield nodes
    finally:
        for node in nodes:
            await node.close()


def quiet_flower() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)


@contextlib.asynccontextmanager
async def learning_network(
    configs: list[dict[str, Any]],
    *,
    heartbeat: float = 0.3,
    compute: Any = None,
    together: bool = False,
) -> AsyncIterator[list[Any]]:
    """A seed DHT peer plus one full ``Node`` per config dict, started in order (or all at
    once, ``together``), in-process (their ClientApps in ``compute``, when given)."""
    from mycelium_p2p.node.node import Node, NodeConfig

    quiet_flower()
    seed = DhtNode(config=FAST)
    await seed.listen(0, "127.0.0.1")
    nodes: list[Any] = []
    try:
        for overrides in configs:
            settings = {"heartbeat_interval": heartbeat, "round_pause": 0.05, **overrides}
            config = NodeConfig(bootstrap=[seed.address], host="127.0.0.1", dht=FAST, **settings)
            nodes.append(Node(config, compute=compute))
            if not together:
                await nodes[-1].start()
        if together:
            await asyncio.gather(*(node.start() for node in nodes))
        yield [seed, *nodes]
    finally:
        for node in nodes:
            await node.stop()
        await seed.close()


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms; return the seconds it took, fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


async def crash(node: Any) -> None:
    """Stop a node the way SIGKILL would: no goodbyes, sockets just close."""
    node.tasks.cancel()
    node.leading.stop()
    if node.group is not None:
        node.group.tasks.cancel()
    await node.channels.close()
    node.dht.stop()
