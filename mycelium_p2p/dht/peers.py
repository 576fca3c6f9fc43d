"""Who a DHT peer is, and what we may send it: id proofs and QUIC's anti-amplification rule.

S/Kademlia ids: a peer's id is ``node_id_for(public key)``. Before a peer enters a routing table
(and so before we return it to anyone), it answers a challenge: we send a random nonce to the
address we saw; it signs ``PROOF_DOMAIN ‖ msgpack([nonce, challenger id, prover id, challenger
ip, challenger port])`` — the *challenger's* address as the prover saw it — and returns its public
key, the signature and that address. We check the id, the signature, and that the address is
ours (our bound port; our bound IP unless we bound a wildcard). A relay that forwards our nonce
to an honest peer gets back a signature over the relay's address, not ours: useless.

Anti-amplification (RFC 9000 §8.1): an address is *validated* once it answered one of our
requests (it received our random 20-byte message id). Until then, everything a datagram from it
makes us send (the reply, and the challenge we send back) stays within 3x the bytes received
from it. Requesters that expect big replies pad their first requests to peers that have not
validated them yet, so honest lookups get whole answers at once.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgpack

from ..aio import loop_time
from ..identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, node_id_for
from ..identity import verify_signature as _verify_signature
from .limits import RateLimiter, TokenBucket
from .rtt import Address

PROOF_DOMAIN = b"mycelium-p2p/dht-id-proof/v1\x00"
NONCE_SIZE = 16
AMPLIFICATION = 3  # RFC 9000: at most 3x the bytes received before an address is validated
PROVE_REQUEST_BYTES = 100  # our challenges are padded to this size, so the answer fits 3x
_HEADER = 21  # rpcudp: 1 type byte + 20-byte message id


def proof_message(
    nonce: bytes, challenger_id: bytes, prover_id: bytes, challenger: Address
) -> bytes:
    """The exact bytes a prover signs (domain-separated, canonical msgpack)."""
    body = [nonce, challenger_id, prover_id, challenger[0], challenger[1]]
    packed: bytes = msgpack.packb(body)
    return PROOF_DOMAIN + packed


def _same_host(seen: str, local: str) -> bool:
    if seen == local or local in ("0.0.0.0", "::", ""):  # the common cases, without parsing
        return True
    try:
        a, b = ipaddress.ip_address(seen), ipaddress.ip_address(local)
    except ValueError:
        return False
    if b.is_unspecified:  # bound to a wildcard: we do not know which of our IPs it saw
        return True
    mapped = getattr(a, "ipv4_mapped", None)
    return a == b or (mapped is not None and mapped == b)


def check_proof(
    reply: Any,
    *,
    nonce: bytes,
    challenger_id: bytes,
    local: Address | None,
    verify: Callable[[bytes, bytes, bytes], bool] = _verify_signature,
) -> bytes | None:
    """The prover's node id when ``reply`` proves it for ``nonce``; else None. Never raises."""
    if not isinstance(reply, list) or len(reply) != 3:
        return None
    public_key, signature, seen = reply
    if not (
        isinstance(public_key, bytes)
        and len(public_key) == PUBLIC_KEY_SIZE
        and isinstance(signature, bytes)
        and len(signature) == SIGNATURE_SIZE
        and isinstance(seen, list)
        and len(seen) == 2
        and isinstance(seen[0], str)
        and len(seen[0]) <= 45
        and isinstance(seen[1], int)
        and 0 < seen[1] < 65536
    ):
        return None
    if local is not None and (seen[1] != local[1] or not _same_host(seen[0], local[0])):
        return None  # signed for someone else's address: a relayed challenge
    prover_id = node_id_for(public_key)
    message = proof_message(nonce, challenger_id, prover_id, (seen[0], seen[1]))
    return prover_id if verify(public_key, signature, message) else None


class _Lru(OrderedDict[Address, Any]):
    """An insertion-ordered map that drops its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Address, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class AddressBook:
    """Per-address knowledge, all bounded: proven ids, validated addresses, byte budgets."""

    def __init__(
        self,
        *,
        max_entries: int = 8192,
        proof_ttl: float = 3600.0,
        clock: Callable[[], float] = loop_time,
    ) -> None:
        self.proof_ttl = proof_ttl
        self.clock = clock
        self._proven = _Lru(max_entries)  # address -> (node id, proven at)
        self._validated = _Lru(max_entries)  # addresses that answered one of our requests
        self._validated_us = _Lru(max_entries)  # addresses whose requests we answered
        self._budget = _Lru(max_entries)  # unvalidated address -> [received, sent]

    # -- ids ---------------------------------------------------------------------------------

    def proven_id(self, address: Address) -> bytes | None:
        entry = self._proven.get(address)
        if entry is None:
            return None
        node_id, at = entry
        if self.clock() - at > self.proof_ttl:
            del self._proven[address]
            return None
        return node_id  # type: ignore[no-any-return]

    def prove(self, address: Address, node_id: bytes) -> bytes | None:
        """Remember ``address`` proved ``node_id``; return the id it had proven before, if any."""
        old = self.proven_id(address)
        self._proven.put(address, (node_id, self.clock()))
        self.validate(address)
        return old if old != node_id else None

    # -- anti-amplification ------------------------------------------------------------------

    def validate(self, address: Address) -> None:
        """``address`` answered a request of ours: it receives what we send there."""
        self._validated.put(address, True)
        self._budget.pop(address, None)

    def is_validated(self, address: Address) -> bool:
        return address in self._validated

    def answered(self, address: Address) -> None:
        """We answered a request from ``address``: from now on it has validated us."""
        self._validated_us.put(address, True)

    def validated_us(self, address: Address) -> bool:
        return address in self._validated_us

    def received(self, address: Address, size: int) -> None:
        if address in self._validated:
            return
        counts = self._budget.get(address)
        if counts is None:
            self._budget.put(address, [size, 0])
        else:
            counts[0] += size

    def allowance(self, address: Address) -> int | None:
        """Bytes we may still send to ``address``; None when it is validated (no limit)."""
        if address in self._validated:
            return None
        received, sent = self._budget.get(address, (0, 0))
        left: int = max(0, AMPLIFICATION * received - sent)
        return left

    def charge(self, address: Address, size: int) -> bool:
        """Count ``size`` bytes sent to ``address`` if its allowance covers them."""
        allowance = self.allowance(address)
        if allowance is None:
            return True
        if size > allowance:
            return False
        self._budget[address][1] += size
        return True


class ProofLimiter:
    """Token buckets for proof work (signing or verifying, ~50-140 µs each).

    One bucket per address (``limits.RateLimiter``) and one for everyone: a stranger gets at
    most ``burst`` proofs at once and ``per_address_rate`` per second; everyone together
    ``total_rate`` per second (500/s: under 10% of a core, however many addresses a spoofer
    uses). A request the shared bucket refuses still spends its address's token.
    """

    def __init__(
        self,
        *,
        per_address_rate: float = 1.0,
        burst: float = 4.0,
        total_rate: float = 500.0,
        total_burst: float = 1000.0,
        max_addresses: int = 4096,
        clock: Callable[[], float] = loop_time,
    ) -> None:
        self.per_address_rate, self.burst = per_address_rate, burst
        self.total_rate, self.total_burst = total_rate, total_burst
        self.clock = clock
        self._per_address = RateLimiter(
            per_address_rate, burst, max_sources=max_addresses, clock=clock
        )
        self._total = TokenBucket(total_rate, total_burst, total_burst, clock())

    def allow(self, address: Address) -> bool:
        """Take one token from ``address``'s bucket and the shared one, if both have one."""
        return self._per_address.allow(address) and self._total.take(self.clock())


def datagram_size(payload: Any) -> int:
    """Bytes of an rpcudp datagram carrying ``payload``."""
    return _HEADER + len(msgpack.packb(payload))


def _drop_until_fits(whole: Any, items: list[Any], allowance: int) -> None:
    """Pop ``items`` (part of ``whole``) from the end until ``whole`` fits: one packing of the
    whole, one of each item dropped (an entry's size is at least its own encoding)."""
    excess = datagram_size(whole) - allowance
    while items and excess > 0:
        excess -= len(msgpack.packb(items.pop()))


def fit_reply(response: Any, allowance: int) -> tuple[Any, bool]:
    """``response`` trimmed so its datagram fits ``allowance`` bytes, and whether it was cut.

    Record pages lose records from the end (``more`` becomes True, so paging goes on), then
    contacts; contact lists lose contacts. Anything else that does not fit becomes None.
    """
    if datagram_size(response) <= allowance:
        return response, False
    if isinstance(response, dict) and isinstance(response.get("records"), list):
        page = dict(response, records=list(response["records"]), nodes=list(response["nodes"]))
        _drop_until_fits(page, page["records"], allowance)
        if len(page["records"]) < len(response["records"]):
            page["more"] = True  # True packs to one byte, as False did: the page still fits
        _drop_until_fits(page, page["nodes"], allowance)
        return (page if datagram_size(page) <= allowance else None), True
    if isinstance(response, list) and all(isinstance(n, list) for n in response):
        nodes = list(response)
        _drop_until_fits(nodes, nodes, allowance)
        return (nodes if datagram_size(nodes) <= allowance else None), True
    return None, True
