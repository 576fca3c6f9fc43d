"""``MyceliumProtocol``: kademlia's protocol, hardened and extended for signed records.

What changes from ``kademlia.protocol.KademliaProtocol`` (and rpcudp underneath):

- Datagrams are parsed defensively: anything malformed is counted and dropped, never raised.
- Handlers never raise (a raising handler sends no reply and gets *us* evicted by the caller).
- Every request's timeout comes from measured round trips (``RttEstimator``), not a fixed 5 s;
  a reply is accepted only from the address the request went to; late replies still teach RTT.
- ``rpc_store`` validates every record (``RecordStore.offer``) and answers False on refusal.
- ``rpc_find_records`` pages through all entries under a key within the datagram budget.
- A read-only peer (a CLI query) sends an empty node id and is never added to routing tables.
- Background work (replication to new peers, bucket pings) runs in owned tasks.

The wire format stays rpcudp's (``0x00|0x01`` + 20-byte id + msgpack), so stock kademlia nodes
interoperate: their stores are validated like anyone's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from rpcudp.exceptions import MalformedMessage

from ..addresses import ip_literal
from ..errors import RecordError
from ..identity import NODE_ID_SIZE
from ..records import signer_of
from .rtt import Address, RttEstimator
from .storage import RecordStore

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 8192  # rpcudp refuses to send more; so do we
REQUEST, RESPONSE = b"\x00", b"\x01"
_MSG_ID_SIZE = 20
_MAX_NODES_IN_REPLY = 64
_MAX_HOST_LEN = 64

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]
RpcResult = tuple[bool, Any]


@dataclass
class ProtocolStats:
    """Counters a test or an operator can read: what was dropped, refused, or timed out."""

    malformed_datagrams: int = 0
    bad_requests: int = 0
    handler_errors: int = 0
    records_stored: int = 0
    records_rejected: int = 0
    timeouts: int = 0
    late_replies: int = 0
    foreign_replies: int = 0


@dataclass
class _Pending:
    future: asyncio.Future[RpcResult]
    timer: asyncio.TimerHandle
    address: Address
    sent_at: float


class _BadRequest(ValueError):
    """A request whose arguments do not have the right shape."""


def _check_id(value: Any, what: str = "node id") -> bytes:
    if not isinstance(value, bytes) or len(value) != NODE_ID_SIZE:
        raise _BadRequest(f"{what} must be {NODE_ID_SIZE} bytes")
    return value


def parse_node_list(items: Any, exclude: bytes) -> list[Node]:
    """Nodes from a ``find_node`` reply; malformed entries are skipped."""
    nodes: list[Node] = []
    if not isinstance(items, list):
        return nodes
    for item in items[:_MAX_NODES_IN_REPLY]:
        if not isinstance(item, list) or len(item) != 3:
            continue
        node_id, host, port = item
        if (
            isinstance(node_id, bytes)
            and len(node_id) == NODE_ID_SIZE
            and node_id != exclude
            and isinstance(host, str)
            and 0 < len(host) <= _MAX_HOST_LEN
            and ip_literal(host) is not None  # a name would be resolved by sendto
            and type(port) is int
            and 0 < port < 65536
        ):
            nodes.append(Node(node_id, host, port))
    return nodes


class _OwnedRoutingTable(RoutingTable):
    """kademlia's routing table, with its bucket-full ping run as an owned task."""

    protocol: MyceliumProtocol

    def add_contact(self, node: Node) -> None:
        index = self.get_bucket_for(node)
        bucket = self.buckets[index]
        if bucket.add_node(node):
            return
        # Section 4.2 of the paper: split when the bucket covers our id or its depth allows.
        if bucket.has_in_range(self.node) or bucket.depth() % 5 != 0:
            self.split_bucket(index)
            self.add_contact(node)
        else:
            self.protocol.spawn(self.protocol.call_ping(bucket.head()))


class MyceliumProtocol(KademliaProtocol):
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
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = _OwnedRoutingTable(self, ksize, source_node)
        self.rtt = rtt
        self.spawn = spawn
        self.read_only = read_only
        self.page_bytes = page_bytes
        self.stats = ProtocolStats()
        self._outstanding: dict[bytes, _Pending] = {}  # type: ignore[assignment]
        self._expired: OrderedDict[bytes, tuple[Address, float]] = OrderedDict()
        self._evicted: OrderedDict[Address, Node] = OrderedDict()
        self._handlers: dict[str, Callable[..., Any]] = {
            "ping": self.rpc_ping,
            "stun": self.rpc_stun,
            "store": self.rpc_store,
            "find_node": self.rpc_find_node,
            "find_value": self.rpc_find_value,
            "find_records": self.rpc_find_records,
        }

    @property
    def wire_id(self) -> bytes:
        """The id we announce: ours, or empty when read-only (so nobody routes to us)."""
        return b"" if self.read_only else self.source_node.id

    # -- receiving ---------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        address: Address = (addr[0], addr[1])
        if len(data) < 1 + _MSG_ID_SIZE + 1 or data[:1] not in (REQUEST, RESPONSE):
            self.stats.malformed_datagrams += 1
            return
        msg_id = data[1 : 1 + _MSG_ID_SIZE]
        try:
            payload = msgpack.unpackb(data[1 + _MSG_ID_SIZE :], raw=False, strict_map_key=False)
        except Exception:  # msgpack raises many types on garbage
            self.stats.malformed_datagrams += 1
            return
        if data[:1] == RESPONSE:
            self._accept_response(msg_id, payload, address)
        elif (
            isinstance(payload, list)
            and len(payload) == 2
            and isinstance(payload[0], str)
            and isinstance(payload[1], list)
        ):
            self._answer(msg_id, payload[0], payload[1], address)
        else:
            self.stats.malformed_datagrams += 1

    def _answer(self, msg_id: bytes, name: str, args: list[Any], address: Address) -> None:
        handler = self._handlers.get(name)
        if handler is None:
            self.stats.bad_requests += 1
            return
        try:
            response = handler(address, *args)
        except (_BadRequest, TypeError) as exc:  # TypeError: wrong number of arguments
            self.stats.bad_requests += 1
            log.debug("bad %s request from %s: %s", name, address, exc)
            response = None
        except Exception:
            self.stats.handler_errors += 1
            log.exception("rpc_%s failed on a request from %s", name, address)
            response = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(RESPONSE + msg_id + msgpack.packb(response), address)

    def _accept_response(self, msg_id: bytes, data: Any, address: Address) -> None:
        now = asyncio.get_running_loop().time()
        pending = self._outstanding.get(msg_id)
        if pending is None:
            expired = self._expired.pop(msg_id, None)
            if expired is not None and expired[0] == address:
                # Alive after all, only slow (a busy host): learn the RTT, take it back.
                self.stats.late_replies += 1
                self.rtt.observe(address, now - expired[1])
                evicted = self._evicted.pop(address, None)
                if evicted is not None:
                    self.welcome_if_new(evicted)
            else:
                self.stats.foreign_replies += 1
            return
        if pending.address != address:
            self.stats.foreign_replies += 1
            return
        del self._outstanding[msg_id]
        pending.timer.cancel()
        self.rtt.observe(address, now - pending.sent_at)
        if not pending.future.done():
            pending.future.set_result((True, data))

    # -- sending -----------------------------------------------------------------------------

    def _call(self, address: Address, name: str, *args: Any) -> asyncio.Future[RpcResult]:
        """Send one request; the future gives (True, reply) or (False, None) on timeout."""
        data = msgpack.packb([name, list(args)])
        if len(data) > MAX_REQUEST_BYTES:
            raise MalformedMessage(f"{name} request is {len(data)} bytes; the limit is 8192")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RpcResult] = loop.create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_result((False, None))
            return future
        msg_id = os.urandom(_MSG_ID_SIZE)
        address = (address[0], address[1])
        timer = loop.call_later(self.rtt.give_up_after(address), self._expire, msg_id)
        self._outstanding[msg_id] = _Pending(future, timer, address, loop.time())
        self.transport.sendto(REQUEST + msg_id + data, address)
        return future

    def _expire(self, msg_id: bytes) -> None:
        pending = self._outstanding.pop(msg_id, None)
        if pending is None:
            return
        self.stats.timeouts += 1
        self._expired[msg_id] = (pending.address, pending.sent_at)
        while len(self._expired) > 1024:
            self._expired.popitem(last=False)
        if not pending.future.done():
            pending.future.set_result((False, None))

    def cancel_outstanding(self) -> None:
        """Fail every open request (on shutdown)."""
        for msg_id in list(self._outstanding):
            pending = self._outstanding.pop(msg_id)
            pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_result((False, None))

    # kademlia's call_* helpers call these; the node id argument is replaced by ``wire_id``.
    def ping(self, address: Address, _nodeid: bytes) -> asyncio.Future[RpcResult]:
        return self._call(address, "ping", self.wire_id)

    def store(
        self, address: Address, _nodeid: bytes, key: bytes, value: bytes
    ) -> asyncio.Future[RpcResult]:
        return self._call(address, "store", self.wire_id, key, value)

    def find_node(self, address: Address, _nodeid: bytes, key: bytes) -> asyncio.Future[RpcResult]:
        return self._call(address, "find_node", self.wire_id, key)

    def find_value(self, address: Address, _nodeid: bytes, key: bytes) -> asyncio.Future[RpcResult]:
        return self._call(address, "find_value", self.wire_id, key)

    def find_records(self, address: Address, key: bytes, after: bytes) -> asyncio.Future[RpcResult]:
        return self._call(address, "find_records", self.wire_id, key, after)

    # -- queries used by lookups: parsed and validated replies -------------------------------

    async def query_nodes(self, node: Node, target: bytes) -> list[Node] | None:
        """Ask ``node`` for the nodes it knows closest to ``target``; None if it did not answer."""
        result = await self.find_node((node.ip, node.port), self.wire_id, target)
        self.handle_call_response(result, node)
        if not result[0]:
            return None
        return parse_node_list(result[1], exclude=self.source_node.id)

    async def query_records(
        self, node: Node, key: bytes, max_pages: int
    ) -> tuple[list[bytes], list[Node]] | None:
        """All record blobs ``node`` holds under ``key`` (paged) and the nodes it suggests."""
        blobs: list[bytes] = []
        nodes: list[Node] = []
        after = b""
        for _ in range(max_pages):
            result = await self.find_records((node.ip, node.port), key, after)
            if after == b"":
                self.handle_call_response(result, node)
            ok, reply = result
            if not ok:
                return None if after == b"" else (blobs, nodes)
            if not isinstance(reply, dict):
                return blobs, nodes
            page = reply.get("records")
            if after == b"":
                nodes = parse_node_list(reply.get("nodes"), exclude=self.source_node.id)
            if not isinstance(page, list):
                return blobs, nodes
            page = [blob for blob in page if isinstance(blob, bytes)]
            blobs.extend(page)
            if reply.get("more") is not True or not page:
                break
            after = _last_signer_marker(page)
        return blobs, nodes

    # -- handlers: they validate their arguments and never raise on peer input ----------------

    def _source(self, sender: Address, nodeid: Any) -> Node | None:
        """The requesting node, welcomed into our table, or None for a read-only peer."""
        if nodeid == b"":
            return None
        node = Node(_check_id(nodeid), sender[0], sender[1])
        self.welcome_if_new(node)
        return node

    def rpc_stun(self, sender: Address) -> list[Any]:
        return [sender[0], sender[1]]

    def rpc_ping(self, sender: Address, nodeid: Any) -> bytes:
        self._source(sender, nodeid)
        return self.source_node.id

    def rpc_store(self, sender: Address, nodeid: Any, key: Any, value: Any) -> bool:
        self._source(sender, nodeid)
        _check_id(key, "key")
        try:
            self.storage.offer(key, value)
        except RecordError as exc:
            self.stats.records_rejected += 1
            log.debug("refused a store from %s: %s", sender, exc)
            return False
        self.stats.records_stored += 1
        return True

    def rpc_find_node(self, sender: Address, nodeid: Any, key: Any) -> list[list[Any]]:
        source = self._source(sender, nodeid)
        neighbors = self.router.find_neighbors(Node(_check_id(key, "key")), exclude=source)
        return [[n.id, n.ip, n.port] for n in neighbors]

    def rpc_find_value(self, sender: Address, nodeid: Any, key: Any) -> Any:
        """Stock kademlia's lookup: one value (the newest record) or closer nodes."""
        blob = self.storage.get(_check_id(key, "key"))
        if blob is None:
            return self.rpc_find_node(sender, nodeid, key)
        self._source(sender, nodeid)
        return {"value": blob}

    def rpc_find_records(self, sender: Address, nodeid: Any, key: Any, after: Any) -> Any:
        """A page of the records under ``key`` after signer marker ``after``, plus closer nodes."""
        if not isinstance(after, bytes) or len(after) > 64:
            raise _BadRequest("after must be a signer marker")
        nodes = self.rpc_find_node(sender, nodeid, key) if after == b"" else []
        blobs, more = self.storage.page(key, after, self.page_bytes)
        return {"records": blobs, "more": more, "nodes": nodes}

    # -- routing-table upkeep ----------------------------------------------------------------

    def handle_call_response(self, result: RpcResult, node: Node) -> RpcResult:
        """Welcome a peer that answered; drop one that did not (remembered, in case it was
        only slow: a late reply brings it back)."""
        if result[0]:
            self.welcome_if_new(node)
            return result
        self.router.remove_contact(node)
        self._evicted[(node.ip, node.port)] = node
        while len(self._evicted) > 256:
            self._evicted.popitem(last=False)
        return result

    def welcome_if_new(self, node: Node) -> None:
        """Add a new contact; hand it the records it is now among the closest to hold.

        Stock kademlia hashes the (already hashed) key again here and fires untracked tasks.
        """
        if node.id == self.source_node.id or not self.router.is_new_node(node):
            return
        for key in self.storage.stored_keys():
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                new_node_close = node.distance_to(keynode) < neighbors[-1].distance_to(keynode)
                we_are_closest = self.source_node.distance_to(keynode) < neighbors[0].distance_to(
                    keynode
                )
                if not (new_node_close and we_are_closest):
                    continue
            for record in self.storage.records(key):
                self.spawn(self.call_store(node, key, record.blob))
        self.router.add_contact(node)


def _last_signer_marker(page: list[bytes]) -> bytes:
    """The pagination marker after a page: the signer of its last record.

    Pages are ordered by signer; the marker is read without verifying (verification happens
    once, on the whole answer), and a wrong marker from a lying peer only costs it its turn.
    """
    return signer_of(page[-1]) or b"\xff" * 33  # unreadable: a marker past every signer
