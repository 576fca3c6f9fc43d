"""``/metrics``: each DHT peer's lookup-latency histogram and a leader's round times, in the
Prometheus text format, counted per node (many share a process)."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mycelium_p2p.dht import DhtNode
from mycelium_p2p.dht import node as dht_node
from mycelium_p2p.histogram import ROUND_BUCKETS, Histogram
from mycelium_p2p.records import record_key
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.hostile import closed_udp_ports
from mycelium_p2p.testing.loopback import swarm
from mycelium_p2p.web.metrics import NodeCollector, render


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of family ``name``: its labels (sorted) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                out[(("sample", s.name), *sorted(s.labels.items()))] = float(s.value)
    return out


def lookups(dht: DhtNode, kind: str, outcome: str, what: str, le: str | None = None) -> float:
    """``what`` (bucket, count, sum) of ``dht``'s lookup histogram, as a scrape reads it."""
    got = samples(render(NodeCollector(dht)).decode(), "mycelium_dht_lookup_seconds")
    labels = {"kind": kind, "outcome": outcome, **({"le": le} if le else {})}
    key = (("sample", f"mycelium_dht_lookup_seconds_{what}"), *sorted(labels.items()))
    return got[key]


@run_async(timeout=60)
async def test_each_peer_times_its_own_lookups_by_kind_and_outcome() -> None:
    async with swarm(3) as (_, reader, other):
        key = record_key("nothing/here")
        before = lookups(other, "records", "done", "count")
        for _ in range(2):
            await reader.get_records(key)
        await reader.get_records(key, timeout=0.0)  # its deadline comes before any answer
        boom = mock.patch.object(dht_node, "lookup", side_effect=RuntimeError("boom"))
        with boom, pytest.raises(RuntimeError):
            await reader.get_records(key)

        assert lookups(reader, "records", "done", "count") == 2
        assert lookups(reader, "records", "timed_out", "count") == 1
        assert lookups(reader, "records", "failed", "count") == 1
        assert lookups(other, "records", "done", "count") == before == 0  # per node
        assert lookups(reader, "nodes", "done", "count") >= 1  # its bootstrap, at least
        hist = reader.lookup_seconds["records", "done"]
        assert lookups(reader, "records", "done", "sum") == pytest.approx(hist.sum)
        assert lookups(reader, "records", "done", "bucket", "+Inf") == 2
        assert lookups(reader, "records", "done", "bucket", "10.0") == 2  # under the deadline
        assert 0 < hist.sum < 10


@run_async(timeout=60)
async def test_our_requests_by_rpc_and_outcome_and_refused_records_by_reason() -> None:
    async with swarm(2) as (seed, peer):
        (dead,) = closed_udp_ports(1)
        assert (await peer.protocol.ping(("127.0.0.1", dead), b""))[0] is False
        ok, stored = await peer.protocol.store(seed.address, b"", record_key("k"), b"garbage")
        assert ok and stored is False  # answered: refused
        ours = samples(render(NodeCollector(peer)).decode(), "mycelium_dht_calls")
        theirs = samples(render(NodeCollector(seed)).decode(), "mycelium_dht_records_refused")

    def value(got: dict[Any, float], **labels: str) -> float:
        return next(v for k, v in got.items() if all((n, x) in k for n, x in labels.items()))

    assert value(ours, rpc="ping", outcome="timed_out") == 1
    assert value(ours, rpc="store", outcome="answered") == 1
    assert value(theirs, reason="malformed_record") == 1


def test_a_refusal_reason_is_its_error_in_snake_case() -> None:
    from mycelium_p2p.dht.stats import refusal_reason
    from mycelium_p2p.errors import RecordError, RecordFromFuture, StoreFull

    assert refusal_reason(StoreFull("x")) == "store_full"
    assert refusal_reason(RecordFromFuture("x")) == "record_from_future"
    assert refusal_reason(RecordError("x")) == "record_error"


def test_a_leaders_round_times_are_a_histogram_beside_the_old_counters() -> None:
    times = Histogram(ROUND_BUCKETS)
    for seconds in (0.3, 0.4, 7.0):
        times.observe(seconds)
    leading = SimpleNamespace(rounds_led=3, round_seconds=7.7, round_times=times)
    traffic = {"channels_open": 0, "in_by_method": {}, "out_by_method": {}}
    node: Any = SimpleNamespace(
        group=None,
        event_counts=Counter(),
        leading=leading,
        channels=SimpleNamespace(traffic=lambda: traffic),
    )
    dht: Any = SimpleNamespace(protocol=None)
    text = render(NodeCollector(dht, node)).decode()
    got = samples(text, "mycelium_round_duration_seconds")
    name = "mycelium_round_duration_seconds"
    assert got[(("sample", f"{name}_count"),)] == 3
    assert got[(("sample", f"{name}_sum"),)] == pytest.approx(7.7)
    assert got[(("sample", f"{name}_bucket"), ("le", "0.5"))] == 2
    assert got[(("sample", f"{name}_bucket"), ("le", "5.0"))] == 2
    assert got[(("sample", f"{name}_bucket"), ("le", "10.0"))] == 3
    assert got[(("sample", f"{name}_bucket"), ("le", "+Inf"))] == 3
    # the names that were there before still are
    assert samples(text, "mycelium_rounds_led")[(("sample", "mycelium_rounds_led_total"),)] == 3
    seconds = samples(text, "mycelium_round_seconds")
    assert math.isclose(seconds[(("sample", "mycelium_round_seconds_total"),)], 7.7)
