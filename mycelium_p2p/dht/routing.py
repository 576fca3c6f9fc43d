"""The routing table our protocol keeps: kademlia's, with owned background pings, the truly
closest contacts, buckets stamped with the event loop's clock, and the ids that refresh them."""

from __future__ import annotations

import heapq
import random
from typing import TYPE_CHECKING

from kademlia.node import Node
from kademlia.routing import RoutingTable

from ..aio import loop_time
from ..identity import NODE_ID_SIZE

if TYPE_CHECKING:
    from .protocol import MyceliumProtocol

__all__ = ["OwnedRoutingTable"]


class OwnedRoutingTable(RoutingTable):
    """kademlia's routing table, with its bucket-full ping run as an owned task, a
    ``find_neighbors`` that returns the closest contacts it holds, and buckets stamped with
    the event loop's clock (kademlia reads ``time.monotonic``; the two agree under asyncio's
    own loops)."""

    protocol: MyceliumProtocol  # spawns the bucket-full ping

    def flush(self) -> None:
        super().flush()
        self.buckets[0].last_updated = loop_time()

    def split_bucket(self, index: int) -> None:
        super().split_bucket(index)
        now = loop_time()
        for bucket in self.buckets[index : index + 2]:
            bucket.last_updated = now

    def has_room_for(self, node: Node) -> bool:
        """Would ``node`` enter a bucket (free, or split) rather than the replacement cache?"""
        bucket = self.buckets[self.get_bucket_for(node)]
        return bool(
            len(bucket) < self.ksize or bucket.has_in_range(self.node) or bucket.depth() % 5 != 0
        )

    def hands_over(self, key: bytes, newcomer: Node) -> bool:
        """Whether our records under ``key`` go to ``newcomer``, a new contact: yes if it is
        now among the closest to ``key`` and we are the closest (or we know no one)."""
        keynode = Node(key)
        neighbors = self.find_neighbors(keynode)
        if not neighbors:
            return True
        new_node_close = newcomer.distance_to(keynode) < neighbors[-1].distance_to(keynode)
        we_are_closest = self.node.distance_to(keynode) < neighbors[0].distance_to(keynode)
        return bool(new_node_close and we_are_closest)

    def refresh_ids(
        self, rng: random.Random, *, only_empty: bool = False, idle_for: float = 0.0
    ) -> list[bytes]:
        """A random id in each bucket (not our own) that is empty, or idle ``idle_for`` s;
        the bucket counts as refreshed from now (nothing else touches it: our lookups do not
        go through kademlia's ``TableTraverser``, and without this a bucket older than
        ``idle_for`` was looked up again at every maintenance pass)."""
        now = loop_time()
        cutoff = now - idle_for
        ids = []
        for bucket in self.buckets:
            if bucket.has_in_range(self.node):
                continue
            if only_empty and len(bucket) > 0:
                continue
            if not only_empty and bucket.last_updated >= cutoff:
                continue
            ids.append(rng.randint(*bucket.range).to_bytes(NODE_ID_SIZE, "big"))
            bucket.last_updated = now
        return ids

    def find_neighbors(
        self, node: Node, k: int | None = None, exclude: Node | None = None
    ) -> list[Node]:
        """The ``k`` contacts closest to ``node`` by XOR distance, over the whole table.

        kademlia's version walks buckets outward by index from the target's and stops at the
        first ``k`` it meets: index order is not XOR order, and its walk ends early at an empty
        bucket (a table of 150 contacts could answer none). Lookups seeded or fed by it miss
        records held by the truly closest peers.
        """
        contacts = (
            contact
            for bucket in self.buckets
            for contact in bucket.nodes.values()
            if contact.id != node.id and (exclude is None or not contact.same_home_as(exclude))
        )
        return heapq.nsmallest(k or self.ksize, contacts, key=node.distance_to)

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
