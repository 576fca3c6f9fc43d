"""``DhtNode``: a kademlia ``Server`` that stores only signed records and survives churn."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from kademlia.network import Server
from kademlia.node import Node

from ..aio import TaskOwner
from ..errors import BootstrapError, RecordError
from ..histogram import Histogram
from ..identity import Identity
from ..records import Record, VerifiedBlobs, best_per_signer
from .config import DhtConfig
from .listing import Listing
from .lookup import LookupResult, lookup
from .protocol import MyceliumProtocol
from .quorum import agreed, held
from .reads import BlobCheck, corrections
from .rejoin import Rejoin
from .rtt import Address, RttEstimator
from .storage import RecordStore
from .transport import DatagramNetwork, UdpNetwork

log = logging.getLogger(__name__)

#: ``DhtNode.lookup_seconds`` keys: what a lookup sought (contacts, or the records under a
#: key too) and how it ended: ``done`` (enough found, or nobody left to ask), ``timed_out``
#: (its deadline came first), ``failed`` (it raised or was cancelled: a caller gave up, the
#: node closed).
LOOKUP_KINDS = ("nodes", "records")
LOOKUP_OUTCOMES = ("done", "timed_out", "failed")


class DhtNode(Server):
    """A DHT peer. ``listen``, ``bootstrap``, then ``put`` and ``get_records``; ``close`` ends it.

    Many can live in one event loop: all state is per instance.
    """

    protocol_class = MyceliumProtocol
    protocol: MyceliumProtocol
    storage: RecordStore

    def __init__(
        self,
        identity: Identity | None = None,
        config: DhtConfig | None = None,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        network: DatagramNetwork | None = None,
    ) -> None:
        """``clock``: wall-clock seconds, for record lifetimes; ``rng``: where the ids of
        bucket refreshes come from (seed one for a reproducible simulation); ``network``:
        where ``listen`` binds (default: UDP sockets; ``testing.SimNetwork``: in memory)."""
        self.identity = identity or Identity.generate()
        self.config = config or DhtConfig()
        self.read_only = read_only
        self.clock = clock
        self.rng = rng or random.Random()
        self.network: DatagramNetwork = UdpNetwork() if network is None else network
        storage = RecordStore(
            clock=clock,
            skew=self.config.clock_skew,
            max_keys=self.config.max_keys,
            max_entries_per_key=self.config.max_entries_per_key,
            quotas=self.config.quotas,
        )
        super().__init__(
            ksize=self.config.ksize,
            alpha=self.config.alpha,
            node_id=self.identity.node_id,
        )
        self.storage = storage  # not via Server(storage=...): an empty store is falsy there
        self.rtt = RttEstimator(
            min_timeout=self.config.min_timeout,
            max_timeout=self.config.max_timeout,
            min_stall=self.config.min_stall,
        )
        self.verified_blobs = VerifiedBlobs(self.config.verified_blobs)  # checked once each
        self.tasks = TaskOwner(f"dht {self.node.id.hex()[:8]}")
        self._seeds: list[Address] = []
        # late-bound: a test swaps ``bootstrap``
        self.rejoin = Rejoin(
            lambda seeds: self.bootstrap(seeds), self._seeds, self.tasks, self.routing_table_size
        )
        #: seconds each lookup took, by (kind, outcome): see ``LOOKUP_KINDS``; a fixed set
        self.lookup_seconds = {
            (kind, outcome): Histogram() for kind in LOOKUP_KINDS for outcome in LOOKUP_OUTCOMES
        }

    def _create_protocol(self) -> MyceliumProtocol:
        return self.protocol_class(
            self.node,
            self.storage,
            self.ksize,
            rtt=self.rtt,
            spawn=self.tasks.spawn,
            read_only=self.read_only,
            page_bytes=self.config.page_bytes,
            identity=self.identity,
            limits=self.config.rpc_limits,
        )

    # -- life cycle ----------------------------------------------------------------------------

    async def listen(self, port: int = 0, interface: str = "0.0.0.0") -> Address:
        """Bind the endpoint (port 0 picks a free one) and start maintenance."""
        self.transport, self.protocol = await self.network.create_endpoint(
            self._create_protocol, (interface, port)
        )
        self.tasks.spawn(self._maintain(), name="dht-maintenance")
        return self.address

    @property
    def address(self) -> Address:
        """The (host, port) the socket is bound to."""
        sockname = self.transport.get_extra_info("sockname")
        return (sockname[0], sockname[1])

    @property
    def stats(self) -> Any:
        return self.protocol.stats

    def refresh_table(self, interval: int = 3600) -> None:
        """Unused: ``_maintain`` refreshes buckets on our own schedule."""

    async def close(self) -> None:
        """Close the socket, then stop every task (nothing new arrives to start more)."""
        super().stop()
        if self.protocol is not None:
            self.protocol.cancel_outstanding()
        await self.tasks.close()

    def stop(self) -> None:
        """Close the socket at once (a crash-like stop); prefer ``await close()``."""
        if self.protocol is not None:
            self.protocol.cancel_outstanding()
        self.tasks.cancel()
        super().stop()

    # -- joining -------------------------------------------------------------------------------

    async def bootstrap(
        self, addrs: Iterable[Address], hints: Iterable[Address] = ()
    ) -> list[Node]:
        """Contact seed peers (IP addresses) and fill the routing table.

        ``hints`` are peers known from an earlier run (``contacts``): pinged along with the
        seeds, but once a seed answered waited for only about a round trip, so dead ones cost
        next to nothing. A node that
        restarts while its seeds are down or just restarted (knowing nobody) still rejoins the
        network it was in, not a corner of it. Raises ``BootstrapError`` when nobody answers.
        The seeds are remembered: they are pinged again whenever they are missing from the
        routing table (a seed that restarted learns of us), and a node whose routing table
        empties contacts them again by itself.
        """
        addrs = [(host, int(port)) for host, port in addrs]
        for addr in addrs:
            if addr not in self._seeds:
                self._seeds.append(addr)
        extra = [a for a in dict.fromkeys((h, int(p)) for h, p in hints) if a not in addrs]
        hinted = [self.tasks.spawn(self._ping_seed(a)) for a in extra[: self.config.max_hints]]
        answered = await asyncio.gather(*(self._ping_seed(addr) for addr in addrs))
        if hinted:  # live ones answer within about a round trip; with no seed, wait them out
            wait = self.rtt.stall_after() if any(answered) else self.rtt.give_up_after()
            await asyncio.wait(hinted, timeout=wait)
        if not any(answered) and not self.routing_table_size():
            listed = ", ".join(f"{h}:{p}" for h, p in addrs) or "none given"
            raise BootstrapError(f"no bootstrap peer answered ({listed})")
        closest = (await self._lookup(self.node.id)).closest
        # Then look into every bucket we know nobody in (the paper refreshes all buckets beyond
        # our closest neighbour): else a node can know nobody in half of the id space, and
        # lookups from it for keys there end among the wrong peers.
        empty = self.protocol.router.refresh_ids(self.rng, only_empty=True)
        await asyncio.gather(*(self._lookup(rid) for rid in empty))
        return closest

    def contacts(self) -> list[Address]:
        """The addresses in our routing table, to remember for the next start (``hints``)."""
        return [(n.ip, n.port) for b in self.protocol.router.buckets for n in b.get_nodes()]

    async def _ping_seed(self, addr: Address) -> Node | None:
        """Challenge a seed to prove its id: one round trip, and it enters our table."""
        return await self.protocol.prove(addr)

    def routing_table_size(self) -> int:
        return sum(len(bucket) for bucket in self.protocol.router.buckets)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.config.maintenance_interval)
            self.storage.cull()
            if self.routing_table_size() == 0:
                if (rebooting := self.rejoin.task()) is not None:
                    await asyncio.shield(rebooting)
                continue
            await self._recontact_seeds()
            if self.routing_table_size() < self.ksize:
                # A node that joined through a seed knowing few (one just restarted) knows few
                # itself; the network learns of it only when it asks around.
                await self._lookup(self.node.id)
            for rid in self.protocol.router.refresh_ids(
                self.rng, idle_for=self.config.refresh_interval
            ):
                await self._lookup(rid)

    async def _recontact_seeds(self) -> None:
        """Ping the seeds missing from our routing table: a seed that was down, or that
        restarted knowing nobody, rejoins our part of the network at once (not when some
        lookup happens to ask it)."""
        known = set(self.contacts())
        missing = [addr for addr in self._seeds if addr not in known]
        if missing:
            await asyncio.gather(*(self._ping_seed(addr) for addr in missing))

    # -- records ---------------------------------------------------------------------------------

    async def _lookup(
        self, target: bytes, *, timeout: float | None = None, **kwargs: Any
    ) -> LookupResult:
        """One lookup, ended after ``timeout`` s at most (default and cap:
        ``config.lookup_deadline``); table upkeep uses one path, puts and gets disjoint ones.
        Its time, waiting for contacts included, goes to ``lookup_seconds``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        limit = self.config.lookup_deadline
        deadline = started + (limit if timeout is None else min(timeout, limit))
        outcome = "failed"
        try:
            if self.routing_table_size() == 0:
                await self.rejoin.await_contacts(deadline)
            result = await lookup(
                self.protocol,
                target,
                ksize=self.ksize,
                alpha=self.alpha,
                deadline=deadline,
                max_pages=self.config.max_pages,
                blame_after=self.config.blame_after,
                **kwargs,
            )
            outcome = "timed_out" if result.timed_out else "done"
            return result
        finally:
            kind = "records" if kwargs.get("records") else "nodes"
            self.lookup_seconds[kind, outcome].observe(loop.time() - started)

    async def find_closest(self, key: bytes, width: int | None = None) -> list[Node]:
        """The ``width`` (default ``ksize``) closest live nodes to ``key``, found over
        ``config.paths`` disjoint paths."""
        result = await self._lookup(
            key, paths=self.config.paths, width=width or self.ksize, complete=True
        )
        return result.closest

    async def put(self, record: Record) -> int:
        """Store ``record`` at the ``siblings`` nodes closest to its key, found over disjoint
        paths; return how many accepted it.

        The sibling list is wider than ``ksize`` so that peers that placed their ids next to
        the key and swallow what they are sent cannot take every copy. A store that got no
        answer is sent once more (a peer that answered no stays refused). Kademlia's ``set``
        says True even when every store failed; this counts real acceptances (our own copy
        included, when we are among the closest).
        """
        key = record.key
        closest = await self.find_closest(key, self.config.siblings)
        stored = 0
        if not self.read_only and self._among_closest(key, closest):
            try:
                self.storage.offer(key, record.blob)
                stored += 1
            except RecordError as exc:
                log.debug("not keeping our own copy: %s", exc)
        for _ in range(2):  # a store lost to a busy moment gets one more try
            replies = await asyncio.gather(
                *(self.protocol.call_store(node, key, record.blob) for node in closest)
            )
            stored += sum(1 for ok, accepted in replies if ok and accepted is True)
            closest = [node for node, (ok, _) in zip(closest, replies, strict=True) if not ok]
            if not closest:
                break
        return stored

    def _among_closest(self, key: bytes, closest: list[Node]) -> bool:
        if len(closest) < self.config.siblings:
            return True
        target = Node(key)
        return bool(self.node.distance_to(target) < closest[-1].distance_to(target))

    async def read_listing(
        self, key: bytes, *, quorum: int | None = None, timeout: float | None = None
    ) -> Listing:
        """``get_records(key, listing=True)``, saying whether the read was whole: it ended
        because ``quorum`` peers answered in full or nobody was left to ask, not because
        ``timeout`` ran out (then it holds what was read by then)."""
        return await self._read(key, quorum=quorum, listing=True, timeout=timeout)

    async def get_records(
        self,
        key: bytes,
        *,
        quorum: int | None = None,
        listing: bool = False,
        timeout: float | None = None,
    ) -> list[Record]:
        """Every signer's newest valid record under ``key``, merged across peers.

        Each value received is verified (signature, key binding, schema, expiry); a peer that
        returns a forgery is a liar and dropped. The lookup searches the ``siblings`` closest
        peers on each of ``paths`` disjoint paths, and stops early only once ``quorum`` peers
        (default ``config.quorum``), reached by every path (``quorum.agreed``), returned the
        newest records seen. Peers that returned older records, or none though they are among
        the closest, are corrected.

        ``listing``: a key many signers share (the group index), read to miss no signer. A
        peer that restarted lately holds only what was published since, so ``quorum``
        (default ``config.listing_quorum``) peers, reached by every path, must have *returned
        records*; they need not agree (the union is taken, newest per signer), since under a
        key that a flood keeps changing the peers' sets never agree and the lookup would read
        every sibling. A listing corrects nobody: what it would send is mostly what others
        stored (a flood's adverts), and the peers it sent them to would count them against
        *our* host's share; owners republish their own (adverts every ``advert_ttl / 3``).
        ``timeout``: end the lookup by then and return what was read (default and cap:
        ``config.lookup_deadline``).
        """
        listed = await self._read(key, quorum=quorum, listing=listing, timeout=timeout)
        return listed.records

    async def _read(
        self, key: bytes, *, quorum: int | None, listing: bool, timeout: float | None
    ) -> Listing:
        checker = BlobCheck(key, self.clock, self.config.clock_skew, self.verified_blobs)
        result = await self._lookup(
            key,
            paths=self.config.paths,
            width=self.config.siblings,
            records=True,
            screen=checker.screen,
            enough=(
                (lambda found: held(found, quorum or self.config.listing_quorum))
                if listing
                else (lambda found: agreed(found, checker.check, quorum or self.config.quorum))
            ),
            timeout=timeout,
        )
        local = [] if self.read_only else self.storage.records(key)
        found = [r for got in result.blobs.values() for b in got if (r := checker.check(b))]
        best = best_per_signer([*found, *local])
        if not listing:  # see the docstring: a listing's corrections would launder a flood
            for node, blob in corrections(best, result, self.config.max_corrections):
                self.tasks.spawn(self.protocol.call_relay(node, key, blob))
        return Listing(sorted(best.values(), key=lambda r: r.signer), not result.timed_out)

    async def set(self, key: Any, value: Any) -> bool:
        raise TypeError("DhtNode stores signed records only: use put(record)")

    async def get(self, key: Any) -> Any:
        raise TypeError("DhtNode stores signed records only: use get_records(key)")

    # -- owner-side republishing -------------------------------------------------------------------

    def keep_published(
        self, make_record: Callable[[], Record], interval: float, retry: float = 2.0
    ) -> asyncio.Task[None]:
        """Publish ``make_record()`` now and every ``interval`` s until the task is cancelled.

        ``make_record`` signs a fresh record each time (new seq, new expiry). A publication no
        peer accepted (every contact gone at once, a network still forming) is tried again
        after ``retry`` s, not a whole interval later; invalid records are logged.
        """

        async def republish() -> None:
            while True:
                stored = 0
                try:
                    stored = await self.put(make_record())
                except RecordError as exc:
                    log.error("cannot publish: %s", exc)
                await asyncio.sleep(interval if stored else min(interval, retry))

        return self.tasks.spawn(republish(), name="republish")
