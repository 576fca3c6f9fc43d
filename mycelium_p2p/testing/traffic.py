"""Hostile traffic against a running network, on loopback, bounded in rate, count and time.

``HostileTraffic`` runs in a thread of its own (its own event loop) beside a chaos run and
aims at whatever ``targets()`` returns at the moment (nodes restart on new ports):

  flood       validly signed adverts of fresh keys, stored in the group index through the DHT
              (each a lookup and k stores, as an outsider's ``put`` would do)
  garbage     random datagrams and well-framed RPCs with arguments of the wrong shape (UDP)
  frames      random bytes, and length prefixes that announce far more than follows (TCP)
  half-open   connections that send 4 bytes of a 1 MiB length and then nothing (held a while)
  churn       connections opened and closed at once

Everything stops at ``deadline`` or on ``stop()``; it only ever sends to 127.0.0.0/8. The
advert flood comes from a loopback address of its own (``FLOOD_HOST``), in the nodes' /24.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgpack

from mycelium_p2p.dht import DhtConfig, DhtNode
from mycelium_p2p.identity import Identity

from .records import make_advert

FLOOD_HOST = "127.0.0.66"  # the flooder's own host: one of the /24 the nodes live in

Address = tuple[str, int]
Targets = tuple[list[Address], list[Address]]  # (UDP addresses, TCP addresses)
log = logging.getLogger(__name__)


@dataclass
class HostileRates:
    """Per second, each; zero turns a kind off."""

    flood: float = 5.0
    garbage: float = 50.0
    frames: float = 5.0
    churn: float = 5.0
    half_open: int = 20  # held open at once
    hold: float = 8.0  # seconds a half-open connection is held


@dataclass
class HostileStats:
    adverts_flooded: int = 0
    adverts_accepted: int = 0  # stores peers accepted (each advert goes to up to k peers)
    datagrams: int = 0
    frames: int = 0
    half_open: int = 0
    churned: int = 0
    connect_failures: int = 0
    errors: list[str] = field(default_factory=list)


def _loopback(addr: Address) -> bool:
    return ipaddress.ip_address(addr[0]).is_loopback


class HostileTraffic:
    def __init__(
        self,
        targets: Callable[[], Targets],
        seeds: list[Address],
        *,
        rates: HostileRates,
        duration: float,
        seed: int = 0,
    ) -> None:
        self._targets = targets
        self._seeds = seeds
        self.rates = rates
        self.deadline = time.monotonic() + duration
        self.rng = random.Random(seed)
        self.stats = HostileStats()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile", daemon=True)
        self._udp: asyncio.DatagramTransport | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _over(self) -> bool:
        return self._stopping.is_set() or time.monotonic() >= self.deadline

    def targets(self) -> Targets:
        udp, tcp = self._targets()
        return [a for a in udp if _loopback(a)], [a for a in tcp if _loopback(a)]

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # reported, not raised: the soak's figures still come out
            self.stats.errors.append(f"{type(exc).__name__}: {exc}")

    async def _main(self) -> None:
        r = self.rates
        jobs: list[Coroutine[Any, Any, None]] = []
        if r.flood > 0:
            jobs.append(self._flood())
        if r.garbage > 0:
            jobs.append(self._paced(r.garbage, self._garbage))
        if r.frames > 0:
            jobs.append(self._paced(r.frames, self._frame))
        if r.churn > 0:
            jobs.append(self._paced(r.churn, self._churn))
        if r.half_open > 0:
            jobs.append(self._half_open())
        try:
            await asyncio.gather(*jobs)
        finally:
            if self._udp is not None:
                self._udp.close()

    async def _paced(self, rate: float, one: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Call ``one`` ``rate`` times a second (never more than 64 at once) until the end."""
        pending: set[asyncio.Task[None]] = set()
        try:
            while not self._over():
                if len(pending) < 64:
                    task = asyncio.create_task(one())
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.sleep(1.0 / rate)
        finally:
            for task in list(pending):
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _flood(self) -> None:
        attacker = DhtNode(config=DhtConfig(lookup_deadline=5.0))
        # a host of its own, as a stranger on the LAN has (in the honest nodes' own /24)
        await attacker.listen(0, FLOOD_HOST)
        count = iter(range(1, 1 << 30))

        async def one() -> None:
            record = make_advert(
                Identity.generate(),
                name=f"flood-{next(count)}",
                members=10,  # full: nobody tries to join it, it only takes room
                ttl=600.0,
                address=("127.0.0.1", 9),
            )
            try:
                accepted = await asyncio.wait_for(attacker.put(record), 10)
            except asyncio.TimeoutError:
                accepted = 0
            self.stats.adverts_flooded += 1
            self.stats.adverts_accepted += accepted

        try:
            while not self._over():
                try:
                    await asyncio.wait_for(attacker.bootstrap(self._seeds), 10)
                    break
                except Exception:  # seeds being killed by the chaos run: try again
                    await asyncio.sleep(1.0)
            await self._paced(self.rates.flood, one)  # several in flight: the rate is kept
        finally:
            await attacker.close()

    async def _garbage(self) -> None:
        udp, _ = self.targets()
        if not udp:
            return
        addr = self.rng.choice(udp)
        rng = self.rng
        kind = rng.random()
        if kind < 0.4:
            data = rng.randbytes(rng.randint(1, 1400))
        else:  # a well-framed request whose arguments are nonsense
            name = rng.choice(["ping", "store", "find_node", "find_value", "find_records", "x"])
            args = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(0, 5))]
            data = b"\x00" + os.urandom(20) + msgpack.packb([name, args])
        if self._udp is None:
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
            )
        self._udp.sendto(data, addr)
        self.stats.datagrams += 1

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        _, tcp = self.targets()
        if not tcp:
            return None
        host, port = self.rng.choice(tcp)
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), 3.0)
        except (OSError, asyncio.TimeoutError):
            self.stats.connect_failures += 1
            return None

    async def _frame(self) -> None:
        conn = await self._connect()
        if conn is None:
            return
        _, writer = conn
        rng = self.rng
        try:
            if rng.random() < 0.5:
                writer.write(rng.randbytes(rng.randint(1, 2000)))
            else:  # a frame that announces more than it sends
                writer.write(struct.pack(">I", rng.randint(1, 1 << 20)) + rng.randbytes(100))
            await asyncio.wait_for(writer.drain(), 3.0)
            self.stats.frames += 1
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    async def _churn(self) -> None:
        conn = await self._connect()
        if conn is not None:
            conn[1].close()
            self.stats.churned += 1

    async def _half_open(self) -> None:
        async def hold() -> None:
            conn = await self._connect()
            if conn is None:
                await asyncio.sleep(1.0)
                return
            _, writer = conn
            try:
                writer.write(struct.pack(">I", 1 << 20))
                await asyncio.wait_for(writer.drain(), 3.0)
                self.stats.half_open += 1
                end = time.monotonic() + self.rates.hold
                while time.monotonic() < end and not self._over():
                    await asyncio.sleep(0.5)
            except (OSError, asyncio.TimeoutError):
                pass
            finally:
                writer.close()

        async def slot() -> None:
            while not self._over():
                await hold()

        await asyncio.gather(*(slot() for _ in range(self.rates.half_open)))
