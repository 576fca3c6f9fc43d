"""Hostile DHT peers for benchmarks and tests, ours and stock kademlia's alike: on loopback, or
on a ``testing.SimNetwork`` (``sim_hostile_peer``; made-up contacts then name a dead sim host).

Each behaviour is a protocol subclass; a hostile peer is an ordinary server whose protocol is
one of these, so it joins, is routed to and answers like any peer, only dishonestly:

- ``drop``: answers nothing (it still joined, so others route to it until it times out);
- ``empty``: answers every record query with "no records" (honest contacts);
- ``stale``: keeps the first version of each record it is sent and replays only that;
- ``forged``: replays what it holds with the signature broken (stock: garbage values);
- ``bogus``: names made-up contacts right next to the target, at dead ports (or a dead host), and
  its crew;
- ``sybil``: an id chosen next to a key; accepts every store and keeps nothing, answers
  "no records" and names only its fellow hostile peers.

Ids come from keys and are proven (``dht/peers.py``), so a sybil must *grind* keys until its
id lands next to the key (``sybil_identity``): about ``2**prefix_bits`` keys for an id sharing
``prefix_bits`` leading bits with it. A dozen bits put 20 sybils closer to a key than every
honest peer of a few hundred, in seconds: the attacker that matters. (``sybil_id`` gives an
id outright; our peers refuse it, as they refuse any id their key does not prove.)
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import socket
from typing import TYPE_CHECKING, Any

from kademlia.node import Node
from kademlia.protocol import KademliaProtocol

from ..dht.config import DhtConfig
from ..dht.node import DhtNode
from ..dht.protocol import MyceliumProtocol
from ..dht.rtt import Address
from ..identity import Identity

if TYPE_CHECKING:
    from .network import SimNetwork

BEHAVIOURS = ("drop", "empty", "stale", "forged", "bogus", "sybil")


def sybil_id(key: bytes, rng: random.Random, spread_bits: int = 24) -> bytes:
    """An id sharing its first ``160 - spread_bits`` bits with ``key``: closer to it than any
    honest peer's, unless the network holds ~2**(160 - spread_bits) peers."""
    offset = rng.getrandbits(spread_bits) | 1
    return (int.from_bytes(key, "big") ^ offset).to_bytes(len(key), "big")


def shared_prefix(a: bytes, b: bytes) -> int:
    """How many leading bits ``a`` and ``b`` share."""
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return len(a) * 8 - x.bit_length()


def sybil_identity(key: bytes, prefix_bits: int, seed: int = 0) -> Identity:
    """A key pair whose (proven) id shares ``prefix_bits`` leading bits with ``key``, found by
    grinding as an attacker would: about ``2**prefix_bits`` keys. Deterministic per seed."""
    if not 0 <= prefix_bits <= 24:
        raise ValueError("grinding more than 24 bits takes hours here")
    base = hashlib.sha256(key + seed.to_bytes(8, "big")).digest()
    for i in itertools.count():
        identity = Identity.from_seed(hashlib.sha256(base + i.to_bytes(8, "big")).digest())
        if shared_prefix(identity.node_id, key) >= prefix_bits:
            return identity
    raise AssertionError("unreachable")


def closed_udp_ports(count: int = 8) -> list[int]:
    """Loopback UDP ports that were free a moment ago and are closed now (dead contacts)."""
    ports = []
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


def made_up_contacts(
    key: bytes, count: int, dead_ports: list[int], dead_host: str = "127.0.0.1"
) -> list[list[Any]]:
    """``count`` contacts closer to ``key`` than anyone real, at ports nobody listens on."""
    rng = random.Random(key)
    return [
        [sybil_id(key, rng, 16), dead_host, dead_ports[i % len(dead_ports)]] for i in range(count)
    ]


def break_signature(blob: bytes) -> bytes:
    """The same bytes with the last one (inside the signature) flipped."""
    return blob[:-1] + bytes([blob[-1] ^ 0x01]) if blob else b"\x00"


class HostileCrew:
    """What hostile peers share: who is in the crew (sybils name only them), and where made-up
    contacts point: ``dead_ports`` on loopback (``closed_udp_ports``), or, on a ``SimNetwork``,
    ``dead_host``, a host nobody listens on (``SimNetwork.new_host()``), at any ports."""

    def __init__(self, dead_ports: list[int] | None = None, dead_host: str | None = None) -> None:
        if dead_host is None and not dead_ports:
            raise ValueError("need at least one dead port, or a dead host, for made-up contacts")
        self.members: list[list[Any]] = []  # [id, host, port] of every hostile peer
        self.dead_ports = dead_ports or [9000 + i for i in range(8)]
        self.dead_host = "127.0.0.1" if dead_host is None else dead_host

    def enlist(self, node_id: bytes, address: Address) -> None:
        self.members.append([node_id, address[0], address[1]])


class _Hostile:
    """The dishonest answers, shared by our protocol's subclass and stock kademlia's."""

    behaviour = "honest"  # until make_hostile
    crew: HostileCrew
    ksize_: int = 20
    kept: dict[bytes, bytes]  # stale and forged: the first value stored under each key

    def contacts_for(self, key: bytes, honest: list[list[Any]]) -> list[list[Any]]:
        if self.behaviour == "bogus":  # made up next to the key, then fellow liars
            half = self.ksize_ // 2
            made_up = made_up_contacts(key, half, self.crew.dead_ports, self.crew.dead_host)
            return made_up + self.crew.members[: self.ksize_ - half]
        if self.behaviour == "sybil":
            return self.crew.members[: self.ksize_]
        return honest

    def swallow(self, key: bytes, value: Any) -> bool:
        """Take a store; what a liar keeps is what it will replay."""
        if self.behaviour in ("stale", "forged") and isinstance(value, bytes):
            self.kept.setdefault(key, value)
        return True

    def lies_for(self, key: bytes) -> list[bytes]:
        held = [self.kept[key]] if key in self.kept else []
        if self.behaviour == "forged":
            return [break_signature(blob) for blob in held]
        if self.behaviour == "stale":
            return held
        return []


class HostileProtocol(_Hostile, MyceliumProtocol):
    """Our protocol, answering dishonestly (``behaviour`` and ``crew`` set after creation)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept = {}
        self.asked = 0  # requests received, answered or not

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data[:1] == b"\x00":
            self.asked += 1
            if self.behaviour == "drop":
                return  # requests vanish; its own lookups' replies still arrive
        super().datagram_received(data, addr)

    def rpc_store(
        self, sender: Address, nodeid: Any, key: Any, value: Any, relayed: Any = False
    ) -> bool:
        self._source(sender, nodeid)
        if self.behaviour in ("sybil", "stale", "forged", "bogus"):
            return isinstance(key, bytes) and self.swallow(key, value)
        return super().rpc_store(sender, nodeid, key, value, relayed)

    def rpc_find_node(self, sender: Address, nodeid: Any, key: Any) -> list[list[Any]]:
        honest = super().rpc_find_node(sender, nodeid, key)
        return self.contacts_for(key, honest) if isinstance(key, bytes) else honest

    def rpc_find_records(self, sender: Address, nodeid: Any, key: Any, after: Any) -> Any:
        if self.behaviour in ("empty", "stale", "forged", "bogus", "sybil"):
            nodes = self.rpc_find_node(sender, nodeid, key) if after == b"" else []
            records = self.lies_for(key) if after == b"" and isinstance(key, bytes) else []
            return {"records": records, "more": False, "nodes": nodes}
        return super().rpc_find_records(sender, nodeid, key, after)


class HostileStockProtocol(_Hostile, KademliaProtocol):
    """Stock kademlia's protocol, answering dishonestly in the same ways."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.behaviour == "drop" and data[:1] == b"\x00":
            return
        super().datagram_received(data, addr)

    def rpc_store(self, sender: Any, nodeid: bytes, key: bytes, value: Any) -> bool:
        if self.behaviour in ("sybil", "stale", "forged", "bogus"):
            self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
            return self.swallow(key, value)
        return bool(super().rpc_store(sender, nodeid, key, value))

    def rpc_find_node(self, sender: Any, nodeid: bytes, key: bytes) -> list[Any]:
        honest = [list(t) for t in super().rpc_find_node(sender, nodeid, key)]
        return [tuple(c) for c in self.contacts_for(key, honest)]

    def rpc_find_value(self, sender: Any, nodeid: bytes, key: bytes) -> Any:
        if self.behaviour == "empty" or self.behaviour in ("bogus", "sybil"):
            return self.rpc_find_node(sender, nodeid, key)
        lies = self.lies_for(key)
        if self.behaviour == "forged":
            lies = lies or [b"\xc1garbage" + os.urandom(8)]
        if lies:
            return {"value": lies[0]}
        return super().rpc_find_value(sender, nodeid, key)


def make_hostile(protocol: Any, behaviour: str, crew: HostileCrew, ksize: int = 20) -> None:
    """Turn a listening server's protocol (one of the classes above) dishonest."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; one of {', '.join(BEHAVIOURS)}")
    protocol.behaviour = behaviour
    protocol.crew = crew
    protocol.ksize_ = ksize


class HostileDhtNode(DhtNode):
    """A ``DhtNode`` speaking ``HostileProtocol`` (honest until ``make_hostile``)."""

    protocol_class = HostileProtocol
    protocol: HostileProtocol


def hostile_dht_node(identity: Identity | None = None, **kwargs: Any) -> Any:
    """A ``HostileDhtNode`` with the key ``identity`` (e.g. a ground ``sybil_identity``) when
    given."""
    return HostileDhtNode(identity, **kwargs)


async def sim_hostile_peer(
    network: SimNetwork,
    rng: random.Random,
    behaviour: str,
    crew: HostileCrew,
    config: DhtConfig | None = None,
    identity: Identity | None = None,
) -> HostileDhtNode:
    """A listening ``HostileDhtNode`` on ``network``, ``behaviour`` and in ``crew`` (not joined
    yet: ``bootstrap`` it). Its key is ``identity`` (a ground sybil's) or comes from ``rng``,
    as its refresh ids do (``sim_dht_node``)."""
    from .swarm import sim_dht_node

    node = sim_dht_node(network, rng, config, cls=HostileDhtNode, identity=identity)
    assert isinstance(node, HostileDhtNode)
    await node.listen()
    make_hostile(node.protocol, behaviour, crew, ksize=node.ksize)
    crew.enlist(node.node.id, node.address)
    return node


def hostile_stock_server(node_id: bytes | None = None, ksize: int = 20) -> Any:
    """A stock kademlia ``Server`` speaking ``HostileStockProtocol``."""
    from kademlia.network import Server

    class HostileServer(Server):
        protocol_class = HostileStockProtocol

    return HostileServer(ksize=ksize, node_id=node_id)
