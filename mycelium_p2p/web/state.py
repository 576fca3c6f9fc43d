"""What the web view shows, as plain data: the network's groups (from the DHT, as every node
reads them) and, when the view belongs to a node, that node. Nothing secret: no key, no invite,
no address beyond what adverts already publish."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .. import events
from ..dht import DhtNode, fetch_adverts
from ..records import GroupAdvert

if TYPE_CHECKING:
    from ..node.node import Node

__all__ = ["group_row", "network_state", "node_state"]

CURVE_POINTS = 200  # accuracy points the page plots


def group_row(advert: GroupAdvert, now: float) -> dict[str, Any]:
    """One listed group, as the page's table shows it."""
    m = advert.metrics
    return {
        "name": advert.name,
        "id": advert.group_id,
        "task": advert.task,
        "policy": advert.policy,
        "members": m.members,
        "capacity": m.capacity,
        "leader": f"{advert.leader[0]}:{advert.leader[1]}",
        "term": advert.term,
        "round": m.round,
        "accuracy": m.accuracy,
        "advert_age_s": round(max(0.0, now - advert.issued_at), 1),
    }


async def network_state(dht: DhtNode, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every listed group (one DHT read, bounded by ``timeout``)."""
    adverts = await fetch_adverts(dht, timeout=timeout)
    now = time.time()
    return [group_row(a, now) for a in adverts]


def node_state(node: Node) -> dict[str, Any]:
    """This node: where it is, its group's accuracy over time, its moves and its traffic."""
    status = node.status()
    curve = [
        {"t": e.at, "kind": e.kind, "round": e.fields.get("round"), "acc": e.fields["accuracy"]}
        for e in node.recent_events
        if e.kind in (events.ROUND, events.EVALUATED)
        and isinstance(e.fields.get("accuracy"), (int, float))
    ][-CURVE_POINTS:]
    moves = [
        {"t": e.at, "text": e.text}
        for e in node.recent_events
        if e.kind in (events.MOVING, events.REGROUP, events.MERGE, events.JOINED, events.FOUNDED)
    ]
    return {**status, "curve": curve, "moves": moves[-50:], "events": dict(node.event_counts)}
