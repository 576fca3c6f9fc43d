"""``MyceliumProtocol``: kademlia's protocol, hardened and extended for signed records.

What changes from ``kademlia.protocol.KademliaProtocol`` (and rpcudp underneath):

- Datagrams are parsed defensively: anything malformed is counted and dropped, never raised.
- Handlers never raise (a raising handler sends no reply and gets *us* evicted by the caller).
- Every request's timeout comes from measured round trips (``RttEstimator``), not a fixed 5 s;
  a reply is accepted only from the address the request went to; late replies still teach RTT.
- ``rpc_store`` validates every record (``RecordStore.offer``) and answers False on refusal.
- Requests over a source's rate limits (``limits.RpcGate``) are dropped before any work;
  stores are offered with their source address, for the store's per-network quotas.
- ``rpc_find_records`` pages through all entries under a key within the datagram budget.
- A read-only peer (a CLI query) sends an empty node id and is never added to routing tables.
- A peer enters our routing table (and our replies) only after proving its id and address
  (``prove``, see ``peers.py``); until an address answered one of our requests, what it makes us
  send stays within 3x what it sent (QUIC's anti-amplification rule).
- Background work (replication to new peers, bucket pings) runs in owned tasks.
- ``find_neighbors`` returns the truly closest contacts (kademlia's can return none at all).
- Lookup queries come back as ``Answer``s that flag malformed replies; ``distrust`` drops a
  peer that answered nonsense and keeps it out of the routing table for a while.

The wire format stays rpcudp's (``wire.py``), so stock kademlia nodes interoperate: their stores
are validated like anyone's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from ..errors import RecordError
from ..identity import Identity
from . import wire
from .calls import PendingCalls, RpcResult
from .distrust import Distrust
from .limits import RpcGate, RpcLimits
from .peers import AddressBook, ProofLimiter, fit_reply
from .proving import IdProofs
from .replies import Answer, add_page, parse_contacts
from .routing import OwnedRoutingTable
from .rtt import Address, RttEstimator
from .stats import ProtocolStats, refusal_reason
from .storage import RecordStore

log = logging.getLogger(__name__)

# First requests to a peer that has not validated our address are padded so that its whole
# answer fits within 3x (20 IPv6 contacts; a record page of 6000 bytes plus contacts).
_PAD_FIND_NODE = 640
_PAD_FIND_RECORDS = 2600

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class MyceliumProtocol(IdProofs, KademliaProtocol):
    """Kademlia RPCs over UDP with validation, adaptive timeouts and paged record lookups."""

    storage: RecordStore

    def __init__(
        self,
        source_node: Node,
        storage: RecordStore,
        ksize: int,
        *,
        rtt: RttEstimator,
        spawn: Spawn,
        read_only: bool = False,
        page_bytes: int = 6000,
        identity: Identity | None = None,
        book: AddressBook | None = None,
        limiter: ProofLimiter | None = None,
        limits: RpcLimits | None = None,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = OwnedRoutingTable(self, ksize, source_node)
        self.rtt = rtt
        self.spawn = spawn
        self.read_only = read_only
        self.page_bytes = page_bytes
        self.stats = ProtocolStats()
        self.identity = identity
        self.book = book or AddressBook()
        self.limiter = limiter or ProofLimiter()
        self.local_address: Address | None = None
        self._proving: dict[Address, asyncio.Future[Node | None]] = {}
        self.gate = RpcGate(limits or RpcLimits())
        self.pending = PendingCalls(self.stats)
        self._evicted: OrderedDict[Address, Node] = OrderedDict()
        self.distrusted = Distrust()
        self._handlers: dict[str, Callable[..., Any]] = {
            "ping": self.rpc_ping,
            "stun": self.rpc_stun,
            "store": self.rpc_store,
            "find_node": self.rpc_find_node,
            "find_value": self.rpc_find_value,
            "find_records": self.rpc_find_records,
            "prove": self.rpc_prove,
        }

    @property
    def wire_id(self) -> bytes:
        """The id we announce: ours, or empty when read-only (so nobody routes to us)."""
        return b"" if self.read_only else self.source_node.id

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            self.local_address = (sockname[0], sockname[1])

    # -- receiving ---------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        address: Address = (addr[0], addr[1])
        self.stats.bytes_in += len(data)
        if len(data) < wire.HEADER_SIZE + 1 or data[:1] not in (wire.REQUEST, wire.RESPONSE):
            self.stats.malformed_datagrams += 1
            return
        if data[:1] == wire.REQUEST:
            self.book.received(address, len(data))
        msg_id = data[1 : wire.HEADER_SIZE]
        ok, payload = wire.unpack_body(data)
        if ok and data[:1] == wire.RESPONSE:
            self._accept_response(msg_id, payload, address)
        elif ok and wire.is_request(payload):
            self._answer(msg_id, payload[0], payload[1], address)
        else:
            self.stats.malformed_datagrams += 1

    def _answer(self, msg_id: bytes, name: str, args: list[Any], address: Address) -> None:
        handler = self._handlers.get(name)
        if handler is None:
            self.stats.bad_requests += 1
            return
        if not self.gate.allow(address, name):
            self.stats.rate_limited += 1
            return
        self.stats.served[name] += 1
        try:
            response = handler(address, *args)
        except (wire.BadRequest, TypeError) as exc:  # TypeError: wrong number of arguments
            self.stats.bad_requests += 1
            log.debug("bad %s request from %s: %s", name, address, exc)
            response = None
        except Exception:
            self.stats.handler_errors += 1
            log.exception("rpc_%s failed on a request from %s", name, address)
            response = None
        data = msgpack.packb(response)
        allowance = self.book.allowance(address)
        if allowance is not None:
            if wire.HEADER_SIZE + len(data) > allowance:
                self.stats.replies_trimmed += 1
                data = msgpack.packb(fit_reply(response, allowance)[0])
            if not self.book.charge(address, wire.HEADER_SIZE + len(data)):
                self.stats.replies_dropped += 1
                return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire.RESPONSE + msg_id + data, address)
            self.stats.bytes_out += wire.HEADER_SIZE + len(data)
            self.book.answered(address)

    def _accept_response(self, msg_id: bytes, data: Any, address: Address) -> None:
        settled = self.pending.settle(msg_id, data, address, asyncio.get_running_loop().time())
        if settled is None:
            return
        self.book.validate(address)  # it received our random message id: a round trip
        self.rtt.observe(address, settled.round_trip)
        if settled.late:  # alive after all, only slow (a busy host): take it back
            evicted = self._evicted.pop(address, None)
            if evicted is not None:
                self.welcome_if_new(evicted)

    # -- sending -----------------------------------------------------------------------------

    def _call(
        self, address: Address, name: str, *args: Any, pad_to: int = 0
    ) -> asyncio.Future[RpcResult]:
        """Send one request; the future gives (True, reply) or (False, None) on timeout.

        ``pad_to`` pads the datagram to about that many bytes (see ``peers.py``).
        """
        data = wire.request_body(name, list(args), pad_to)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RpcResult] = loop.create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_result((False, None))
            return future
        msg_id = os.urandom(wire.MSG_ID_SIZE)
        address = (address[0], address[1])
        self.pending.open(loop, msg_id, address, name, self.rtt.give_up_after(address), future)
        self.transport.sendto(wire.REQUEST + msg_id + data, address)
        self.stats.bytes_out += wire.HEADER_SIZE + len(data)
        return future

    def cancel_outstanding(self) -> None:
        """Fail every open request (on shutdown)."""
        self.pending.cancel_all()

    # kademlia's call_* helpers call these; the node id argument is replaced by ``wire_id``.
    def ping(self, address: Address, _nodeid: bytes) -> asyncio.Future[RpcResult]:
        return self._call(address, "ping", self.wire_id)

    def store(
        self, address: Address, _nodeid: bytes, key: bytes, value: bytes
    ) -> asyncio.Future[RpcResult]:
        return self._call(address, "store", self.wire_id, key, value)

    async def call_relay(self, node: Node, key: bytes, value: bytes) -> RpcResult:
        """Store a copy of someone else's record at ``node`` (replication, read-repair): it is
        kept as *relayed*, which never displaces a publication nor counts as ours."""
        result = await self._call((node.ip, node.port), "store", self.wire_id, key, value, True)
        return self.handle_call_response(result, node)

    def find_node(self, address: Address, _nodeid: bytes, key: bytes) -> asyncio.Future[RpcResult]:
        pad = self._pad(address, _PAD_FIND_NODE)
        return self._call(address, "find_node", self.wire_id, key, pad_to=pad)

    def find_value(self, address: Address, _nodeid: bytes, key: bytes) -> asyncio.Future[RpcResult]:
        pad = self._pad(address, _PAD_FIND_RECORDS)
        return self._call(address, "find_value", self.wire_id, key, pad_to=pad)

    def find_records(self, address: Address, key: bytes, after: bytes) -> asyncio.Future[RpcResult]:
        pad = self._pad(address, _PAD_FIND_RECORDS)
        return self._call(address, "find_records", self.wire_id, key, after, pad_to=pad)

    # -- queries used by lookups: parsed and validated replies -------------------------------

    async def query_nodes(self, node: Node, target: bytes) -> Answer | None:
        """Ask ``node`` for the nodes it knows closest to ``target``; None if it did not answer."""
        result = await self.find_node((node.ip, node.port), self.wire_id, target)
        self.handle_call_response(result, node)
        if not result[0]:
            return None
        nodes = parse_contacts(result[1], exclude=self.source_node.id)
        return Answer(malformed=True) if nodes is None else Answer(nodes)

    async def query_records(
        self,
        node: Node,
        key: bytes,
        max_pages: int,
        on_answer: Callable[[], None] | None = None,
    ) -> Answer | None:
        """All record blobs ``node`` holds under ``key`` (paged) and the nodes it suggests;
        None if it did not answer at all. ``on_answer`` is called when its first page arrives
        (it is alive, and paging: a lookup must not count it as stalled). A later page that
        times out is asked for once more; if it times out again, or the key holds more than
        ``max_pages``, the answer is what came, marked incomplete."""
        answer = Answer(complete=False)
        after = b""
        for _ in range(max_pages):
            result = await self.find_records((node.ip, node.port), key, after)
            if after == b"":
                self.handle_call_response(result, node)
            elif not result[0]:  # a busy peer loses a page now and then: one more try
                result = await self.find_records((node.ip, node.port), key, after)
            ok, reply = result
            if not ok:
                return None if after == b"" else answer
            if after == b"" and on_answer is not None:
                on_answer()
            marker = add_page(answer, reply, first=after == b"", exclude=self.source_node.id)
            if marker is None:
                break
            after = marker
        return answer

    def distrust(self, node: Node, *, proven: bool = True) -> None:
        """``node`` answered nonsense: drop it from the routing table.

        ``proven`` (a malformed reply, a forged record) also keeps it out for ``Distrust.period``
        s, whatever it sends meanwhile. Without proof (its referrals did not answer, which an
        honest peer's also do just after a wave of crashes) it may come back on its own, and a
        table of ``ksize`` contacts or fewer keeps it: a lonely node does not cut its last links.
        """
        self.stats.liars_dropped += 1
        if not proven and sum(len(b) for b in self.router.buckets) <= self.router.ksize:
            return
        self.router.remove_contact(node)
        self._evicted.pop((node.ip, node.port), None)
        if proven:
            self.distrusted.add(node.id)

    def distrusts(self, node_id: bytes) -> bool:
        """Whether ``node_id`` lied to us lately (see ``Distrust``)."""
        return node_id in self.distrusted

    # -- handlers: they validate their arguments and never raise on peer input ----------------

    def _source(self, sender: Address, nodeid: Any) -> Node | None:
        """The requesting node, or None for a read-only peer. It is welcomed into our table
        if it proved that id from that address, else challenged (within the limits)."""
        if nodeid == b"":
            return None
        node = Node(wire.check_id(nodeid), sender[0], sender[1])
        if self.book.proven_id(sender) == node.id:
            self.welcome_if_new(node)
        else:  # unknown, or another id than it proved here (a restart with a new key?)
            self._request_proof(node, inbound=True)
        return node

    def rpc_stun(self, sender: Address) -> list[Any]:
        return [sender[0], sender[1]]

    def rpc_ping(self, sender: Address, nodeid: Any) -> bytes:
        self._source(sender, nodeid)
        ours: bytes = self.source_node.id
        return ours

    def rpc_store(
        self, sender: Address, nodeid: Any, key: Any, value: Any, relayed: Any = False
    ) -> bool:
        """Keep ``value`` under ``key``; ``relayed``: a copy of another's record (see
        ``RecordStore``), as replication and read-repair send."""
        self._source(sender, nodeid)
        wire.check_id(key, "key")
        if not isinstance(relayed, bool):
            raise wire.BadRequest("relayed must be a bool")
        try:
            self.storage.offer(key, value, source=sender[0], relayed=relayed)
        except RecordError as exc:
            self.stats.records_rejected += 1
            self.stats.refused_by[refusal_reason(exc)] += 1
            log.debug("refused a store from %s: %s", sender, exc)
            return False
        self.stats.records_stored += 1
        return True

    def rpc_find_node(self, sender: Address, nodeid: Any, key: Any) -> list[list[Any]]:
        source = self._source(sender, nodeid)
        neighbors = self.router.find_neighbors(Node(wire.check_id(key, "key")), exclude=source)
        return [[n.id, n.ip, n.port] for n in neighbors]

    def rpc_find_value(self, sender: Address, nodeid: Any, key: Any) -> Any:
        """Stock kademlia's lookup: one value (the newest record) or closer nodes."""
        blob = self.storage.get(wire.check_id(key, "key"))
        if blob is None:
            return self.rpc_find_node(sender, nodeid, key)
        self._source(sender, nodeid)
        return {"value": blob}

    def rpc_find_records(self, sender: Address, nodeid: Any, key: Any, after: Any) -> Any:
        """A page of the records under ``key`` after signer marker ``after``, plus closer nodes."""
        if not isinstance(after, bytes) or len(after) > 64:
            raise wire.BadRequest("after must be a signer marker")
        nodes = self.rpc_find_node(sender, nodeid, key) if after == b"" else []
        blobs, more = self.storage.page(key, after, self.page_bytes)
        return {"records": blobs, "more": more, "nodes": nodes}

    # -- routing-table upkeep ----------------------------------------------------------------

    def handle_call_response(self, result: RpcResult, node: Node) -> RpcResult:
        """Welcome a peer that answered (once it proved its id); drop one that did not
        (remembered, in case it was only slow: a late reply brings it back)."""
        if result[0]:
            proven = self.book.proven_id((node.ip, node.port))
            if proven == node.id:
                self.welcome_if_new(node)
            elif proven is None:
                self._request_proof(node, inbound=False)
            else:
                self.stats.bogus_ids += 1  # whoever listed it lied about the id
            return result
        listed = self.router.buckets[self.router.get_bucket_for(node)][node.id]
        if listed is not None and (listed.ip, listed.port) == (node.ip, node.port):
            self.router.remove_contact(node)  # not when a liar gave its id a dead address
        self._evicted[(node.ip, node.port)] = node
        while len(self._evicted) > 256:
            self._evicted.popitem(last=False)
        return result

    def welcome_if_new(self, node: Node) -> None:
        """Add a new contact; hand it the records it is now among the closest to hold.

        Only a peer that proved its id from its address is welcomed: that proof is also the
        round trip that lets us send it more than 3x what it sent. Stock kademlia hashes the
        (already hashed) key again here and fires untracked tasks.
        """
        if node.id == self.source_node.id or not self.router.is_new_node(node):
            return
        if self.distrusts(node.id) or self.book.proven_id((node.ip, node.port)) != node.id:
            return
        for key in self.storage.stored_keys():
            if not self.router.hands_over(key, node):
                continue
            for record in self.storage.records(key):
                self.spawn(self.call_relay(node, key, record.blob))
        self.router.add_contact(node)
