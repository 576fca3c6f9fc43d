"""Lookup replies as a querier sees them: contact lists parsed strictly, record pages added
up, and ``Answer``.

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
from ..records import signer_of

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


def add_page(answer: Answer, reply: Any, *, first: bool, exclude: bytes) -> bytes | None:
    """Add a ``find_records`` reply (a page; the ``first`` also names contacts, ``exclude``
    left out) to ``answer``: the marker to ask for the next page after, or None when the
    answer is done (complete, or malformed: the page was not what an honest peer sends)."""
    page = reply.get("records") if isinstance(reply, dict) else None
    if not isinstance(page, list) or not all(isinstance(b, bytes) for b in page):
        answer.malformed = True
        return None
    if first:
        nodes = parse_contacts(reply.get("nodes"), exclude=exclude)
        if nodes is None:
            answer.malformed = True
            return None
        answer.nodes = nodes
    answer.blobs.extend(page)
    if reply.get("more") is not True or not page:
        answer.complete = True
        return None
    return _last_signer_marker(page)


def _last_signer_marker(page: list[bytes]) -> bytes:
    """The pagination marker after a page: the signer of its last record.

    Pages are ordered by signer; the marker is read without verifying (verification happens
    once, on the whole answer), and a wrong marker from a lying peer only costs it its turn.
    """
    return signer_of(page[-1]) or b"\xff" * 33  # unreadable: a marker past every signer
