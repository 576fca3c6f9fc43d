"""``/metrics``: a node's figures in the Prometheus text format, read when scraped.

A collector per view, in a registry of its own (``prometheus_client``'s default registry is
process-global, and many nodes may share a process). Nothing is counted twice: every figure is
the node's own counter, read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from math import isinf
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..histogram import Histogram

if TYPE_CHECKING:
    from ..dht import DhtNode
    from ..node.node import Node

__all__ = ["CONTENT_TYPE", "NodeCollector", "histogram_family", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DHT_OUTCOMES = (  # ProtocolStats fields: what happened to requests and records
    "timeouts",
    "rate_limited",
    "malformed_datagrams",
    "bad_requests",
    "late_replies",
    "proofs_failed",
    "liars_dropped",
)


class NodeCollector(Collector):
    """The figures of one node (or of a DHT peer alone: ``node`` None)."""

    def __init__(self, dht: DhtNode, node: Node | None = None) -> None:
        self.dht, self.node = dht, node

    def collect(self) -> Iterator[Metric]:
        yield from self._dht()
        if self.node is not None:
            yield from self._node(self.node)

    def _dht(self) -> Iterator[Metric]:
        stats: Any = self.dht.protocol.stats if self.dht.protocol is not None else None
        if stats is None:
            return
        served = CounterMetricFamily(
            "mycelium_dht_requests_served", "DHT requests answered, by RPC", labels=["rpc"]
        )
        for rpc, n in sorted(stats.served.items()):
            served.add_metric([str(rpc)], n)
        yield served
        outcomes = CounterMetricFamily(
            "mycelium_dht_refused",
            "DHT requests and replies refused or lost, by reason",
            labels=["reason"],
        )
        for name in _DHT_OUTCOMES:
            outcomes.add_metric([name], getattr(stats, name))
        yield outcomes
        records = CounterMetricFamily(
            "mycelium_dht_records", "Records offered to our store, by outcome", labels=["outcome"]
        )
        records.add_metric(["stored"], stats.records_stored)
        records.add_metric(["refused"], stats.records_rejected)
        yield records
        refused = CounterMetricFamily(
            "mycelium_dht_records_refused",
            "Records our store refused, by reason (stale_record, store_full, bad_signature...)",
            labels=["reason"],
        )
        for reason, n in sorted(stats.refused_by.items()):
            refused.add_metric([reason], n)
        yield refused
        calls = CounterMetricFamily(
            "mycelium_dht_calls",
            "DHT requests we sent, by RPC and outcome (answered, timed_out)",
            labels=["rpc", "outcome"],
        )
        for (rpc, outcome), n in sorted(stats.calls.items()):
            calls.add_metric([rpc, outcome], n)
        yield calls
        datagrams = CounterMetricFamily(
            "mycelium_dht_bytes", "Bytes of DHT datagrams", labels=["direction"]
        )
        datagrams.add_metric(["in"], stats.bytes_in)
        datagrams.add_metric(["out"], stats.bytes_out)
        yield datagrams
        yield GaugeMetricFamily(
            "mycelium_dht_contacts", "Contacts in the routing table", self.dht.routing_table_size()
        )
        lookups = HistogramMetricFamily(
            "mycelium_dht_lookup_seconds",
            "Seconds of our DHT lookups, by kind (nodes, records) and outcome",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), hist in sorted(self.dht.lookup_seconds.items()):
            histogram_family(lookups, [kind, outcome], hist)
        yield lookups

    def _node(self, node: Node) -> Iterator[Metric]:
        group = node.group
        yield GaugeMetricFamily(
            "mycelium_group_members",
            "Members of our group (0: none)",
            len(group.roster) if group else 0,
        )
        yield GaugeMetricFamily(
            "mycelium_group_term", "Our group's term", group.term if group else 0
        )
        yield GaugeMetricFamily(
            "mycelium_group_round",
            "Our group's latest model round",
            group.model.round if group else 0,
        )
        yield GaugeMetricFamily(
            "mycelium_leader",
            "1 while this node leads its group",
            int(bool(group and group.is_leader)),
        )
        counted = CounterMetricFamily(
            "mycelium_events",
            "Node events by kind (rounds led, elections won, migrations...)",
            labels=["kind"],
        )
        for kind, n in sorted(node.event_counts.items()):
            counted.add_metric([kind], n)
        yield counted
        led = CounterMetricFamily("mycelium_rounds_led", "Rounds this node led, in every group")
        led.add_metric([], node.leading.rounds_led)
        yield led
        seconds = CounterMetricFamily("mycelium_round_seconds", "Seconds of the rounds it led")
        seconds.add_metric([], node.leading.round_seconds)
        yield seconds
        yield histogram_family(
            HistogramMetricFamily(
                "mycelium_round_duration_seconds", "Seconds of each round this node led"
            ),
            [],
            node.leading.round_times,
        )
        traffic = node.channels.traffic()
        yield GaugeMetricFamily("mycelium_channels_open", "Open channels", traffic["channels_open"])
        frames = CounterMetricFamily(
            "mycelium_channel_bytes",
            "Bytes of channel frames, by method and direction",
            labels=["method", "direction"],
        )
        for direction in ("in", "out"):
            for method, n in sorted(traffic[f"{direction}_by_method"].items()):
                frames.add_metric([method, direction], n)
        yield frames


def histogram_family(
    family: HistogramMetricFamily, labels: list[str], hist: Histogram
) -> HistogramMetricFamily:
    """Add ``hist`` to ``family`` as the sample of ``labels``; return ``family``."""
    buckets = [("+Inf" if isinf(bound) else repr(bound), n) for bound, n in hist.cumulative()]
    family.add_metric(labels, buckets, hist.sum)
    return family


def render(collector: NodeCollector) -> bytes:
    """The text a scrape gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
