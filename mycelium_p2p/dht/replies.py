"""Lookup replies as a querier sees them: contact lists parsed strictly, and ``Answer``.

No honest peer sends a malformed contact list, so a querier that gets one knows its sender
lies (``Answer.malformed``) instead of quietly skipping the bad entries. Hosts must be IP
literals: a name from a peer is never resolved.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from kademlia.node import Node

from ..identity import NODE_ID_SIZE

MAX_CONTACTS_IN_REPLY = 64
_MAX_HOST_LEN = 64


@dataclass
class Answer:
    """A peer's parsed answer to a lookup query. ``malformed``: it sent what no honest peer
    sends (the lookup then treats it as a liar). ``complete``: every page of the records it
    holds came (a page lost to a timeout, or past ``max_pages``, leaves a part)."""

    nodes: list[Node] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    malformed: bool = False
    complete: bool = True


def parse_contacts(items: Any, exclude: bytes) -> list[Node] | None:
    """Contacts from a ``find_node`` reply (our own id left out), or None if the list is
    malformed: no honest peer sends a bad entry, a duplicate id, a host name or too many. A
    second id at one address is skipped (one query per address: a restarted peer's old id)."""
    if not isinstance(items, list) or len(items) > MAX_CONTACTS_IN_REPLY:
        return None
    nodes: list[Node] = []
    seen: set[bytes] = set()
    addresses: set[tuple[str, int]] = set()
    for item in items:
        if not isinstance(item, list) or len(item) != 3:
            return None
        node_id, host, port = item
        if not (
            isinstance(node_id, bytes)
            and len(node_id) == NODE_ID_SIZE
            and node_id not in seen
            and isinstance(host, str)
            and 0 < len(host) <= _MAX_HOST_LEN
            and _is_ip_literal(host)
            and type(port) is int  # not True, which is an int to isinstance
            and 0 < port < 65536
        ):
            return None
        seen.add(node_id)
        if node_id != exclude and (host, port) not in addresses:
            addresses.add((host, port))
            nodes.append(Node(node_id, host, port))
    return nodes


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
