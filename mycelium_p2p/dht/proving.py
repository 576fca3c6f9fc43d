"""``IdProofs``: the protocol's side of id proofs (challenging, answering) and request padding.

The rules (what is signed, what is checked, the 3x budget) are in ``peers.py``; this mixin puts
them on the wire for ``MyceliumProtocol``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from kademlia.node import Node
from kademlia.routing import RoutingTable

from ..identity import NODE_ID_SIZE, Identity
from .peers import (
    NONCE_SIZE,
    PROVE_REQUEST_BYTES,
    AddressBook,
    ProofLimiter,
    check_proof,
    proof_message,
)
from .rtt import Address

_MAX_PROVING = 1024  # challenges in flight, at most


class IdProofs:
    """Challenges peers to prove their ids; answers their challenges. Mixed into the protocol."""

    # Provided by MyceliumProtocol.
    identity: Identity | None
    book: AddressBook
    limiter: ProofLimiter
    local_address: Address | None
    read_only: bool
    source_node: Node
    router: RoutingTable
    stats: Any
    _proving: dict[Address, asyncio.Future[Node | None]]
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    _call: Callable[..., asyncio.Future[tuple[bool, Any]]]
    welcome_if_new: Callable[[Node], None]
    _source: Callable[[Address, Any], Node | None]

    if TYPE_CHECKING:  # provided by MyceliumProtocol

        @property
        def wire_id(self) -> bytes: ...

    def _pad(self, address: Address, size: int) -> int:
        """Pad requests to a peer that has not validated our address yet (else none)."""
        return 0 if self.book.validated_us((address[0], address[1])) else size

    async def prove(self, address: Address) -> Node | None:
        """Challenge ``address`` to prove its id; the proven node (remembered), else None."""
        address = (address[0], address[1])
        running = self._proving.get(address)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Node | None] = asyncio.get_running_loop().create_future()
        self._proving[address] = future
        node = None
        try:
            node = await self._challenge(address)
        finally:
            del self._proving[address]
            future.set_result(node)
        return node

    async def _challenge(self, address: Address) -> Node | None:
        nonce = os.urandom(NONCE_SIZE)
        ok, reply = await self._call(
            address, "prove", self.wire_id, nonce, pad_to=PROVE_REQUEST_BYTES
        )
        if not ok:
            return None
        local = self.local_address
        node_id = check_proof(reply, nonce=nonce, challenger_id=self.wire_id, local=local)
        if node_id is None:
            self.stats.proofs_failed += 1
            return None
        if node_id == self.source_node.id:
            return None  # that is us
        self.stats.proofs_ok += 1
        replaced = self.book.prove(address, node_id)
        if replaced is not None:  # a new node at that address (a restart with a new key)
            self.router.remove_contact(Node(replaced))
        node = Node(node_id, address[0], address[1])
        self.welcome_if_new(node)
        return node

    def _request_proof(self, node: Node, *, inbound: bool) -> None:
        """Challenge ``node``'s address in the background, within the limits, if it could enter
        our routing table (a full bucket that cannot split would not take it: no work).

        ``inbound``: a request from it caused this; the challenge counts against its 3x budget.
        """
        address = (node.ip, node.port)
        if address in self._proving or len(self._proving) >= _MAX_PROVING:
            return
        if not self.router.has_room_for(node):
            return
        allowance = self.book.allowance(address) if inbound else None
        if allowance is not None and allowance < PROVE_REQUEST_BYTES:
            return
        if not self.limiter.allow(address):
            self.stats.proofs_throttled += 1
            return
        if inbound:
            self.book.charge(address, PROVE_REQUEST_BYTES)
        self.spawn(self.prove(address))

    def rpc_prove(self, sender: Address, nodeid: Any, nonce: Any) -> list[Any] | None:
        """Sign the challenge (see ``peers.py``); challenge the sender back if it has an id."""
        if not (
            isinstance(nonce, bytes)
            and len(nonce) == NONCE_SIZE
            and isinstance(nodeid, bytes)
            and len(nodeid) in (0, NODE_ID_SIZE)
        ):
            self.stats.bad_requests += 1
            return None
        if self.identity is None or self.read_only:
            return None
        if not self.limiter.allow(sender):
            self.stats.proofs_throttled += 1
            return None
        self._source(sender, nodeid)
        message = proof_message(nonce, nodeid, self.source_node.id, sender)
        return [self.identity.public_key, self.identity.sign(message), [sender[0], sender[1]]]
