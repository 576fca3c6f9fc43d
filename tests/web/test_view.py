"""The web view of a live node: the page (a plain table without JavaScript), its JSON state,
and Prometheus metrics; read-only, on loopback, with text from the network escaped."""

from __future__ import annotations

import asyncio
import contextlib
import json
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mycelium_p2p.records import record_key, roster_topic
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network, swarm
from mycelium_p2p.web import WebView, server
from mycelium_p2p.web.metrics import NodeCollector, render
from mycelium_p2p.web.page import render_page


class Tables(HTMLParser):
    """The text of every table cell, by table id; and the scripts' sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.scripts: list[str] = []
        self._table: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or "?"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th", "script"):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if tag in ("td", "th", "script"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.scripts.append(data)
        elif self._in and self._table and self.tables[self._table]:
            self.tables[self._table][-1].append(data)


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (name, name + "_total") and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                return float(sample.value)
    raise AssertionError(f"no {name} {labels} in the metrics")


@run_async(timeout=150)
async def test_a_live_nodes_page_state_and_metrics() -> None:
    async with learning_network([{"create": "club"}, {"group": "club"}]) as (_, leader, member):
        await wait_for(lambda: leader.group.model.round >= 2, 90, "two rounds")
        led = render(NodeCollector(leader.dht, leader)).decode()
        roster = await member.dht.get_records(record_key(roster_topic(leader.group.group_id)))
        beats = {r.signer: r.body for r in roster}
        totals = member.traffic_totals()
        view = WebView(member.dht, member)
        host, port = await view.start()
        assert host == "127.0.0.1"  # loopback unless told otherwise
        base = f"http://{host}:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/") as reply:
                    assert reply.status == 200
                    page = await reply.text()
                async with http.get(base + "/api/state") as reply:
                    state: dict[str, Any] = await reply.json()
                async with http.get(base + "/metrics") as reply:
                    assert reply.headers["Content-Type"].startswith("text/plain")
                    metrics = await reply.text()
                async with http.post(base + "/") as reply:
                    assert reply.status == 405  # read-only
        finally:
            await view.close()
    parsed = Tables()
    parsed.feed(page)
    rows = parsed.tables["groups"][1:]
    assert [row[0] for row in rows] == ["club"] and rows[0][4] == "2/10"
    node = {row[0]: row[1] for row in parsed.tables["node"]}
    assert node["role"] == "member" and node["group"] == "club"
    assert [g["name"] for g in state["groups"]] == ["club"]
    assert state["node"]["traffic"]["in_by_method"]["fl.msg"] > 0
    assert metric(metrics, "mycelium_group_members") == 2
    assert metric(metrics, "mycelium_channel_bytes", method="fl.msg", direction="in") > 0
    assert metric(metrics, "mycelium_dht_bytes", direction="in") > 0
    assert metric(metrics, "mycelium_leader") == 0
    assert metric(metrics, "mycelium_dht_lookup_seconds_count", kind="records", outcome="done") > 0
    assert metric(led, "mycelium_round_duration_seconds_count") >= 2
    beat = beats[member.identity.public_key]  # its presence says what it had received and sent
    assert 0 < beat.bytes_in <= totals[0] and 0 < beat.bytes_out <= totals[1]
    traffic = state["node"]["traffic"]
    assert totals[0] <= traffic["bytes_in"] + traffic["dht_bytes_in"]  # read later, grown
    assert metric(led, "mycelium_round_duration_seconds_bucket", le="+Inf") >= 2


@run_async(timeout=60)
async def test_events_push_the_state_to_a_bounded_number_of_streams() -> None:
    async with swarm(2) as (dht, _):
        view = WebView(dht)
        view.max_streams = 1
        host, port = await view.start()
        url = f"http://{host}:{port}/api/events"
        try:
            async with aiohttp.ClientSession() as http, http.get(url) as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                pushed = []
                while len(pushed) < 2:  # one now, one a second later
                    line = await asyncio.wait_for(stream.content.readline(), 10)
                    if line.startswith(b"data: "):
                        pushed.append(json.loads(line[6:]))
                assert pushed[0]["groups"] == [] and pushed[1]["t"] > pushed[0]["t"]
                async with http.get(url) as second:
                    assert second.status == 503  # the page polls instead
                loop = asyncio.get_running_loop()
                started = loop.time()
                await view.close()  # ends the open stream at once
                while await asyncio.wait_for(stream.content.readline(), 10):
                    pass
                assert loop.time() - started < 5
        finally:
            await view.close()


@run_async(timeout=60)
async def test_a_reader_that_stops_reading_is_cut_and_does_not_hold_the_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "STATE_EVERY", 0.01)  # many big states: buffers fill at once
    monkeypatch.setattr(server, "WRITE_TIMEOUT", 0.5)
    big = [{"name": "x" * 100_000}]
    async with swarm(2) as (dht, _):
        for stalled in ("cut", "closed"):
            view = WebView(dht)
            monkeypatch.setattr(view, "groups", lambda: asyncio.sleep(0, big))
            host, port = await view.start()
            readers = []
            try:
                for _ in range(3):  # each asks, then never reads again
                    reader, writer = await asyncio.open_connection(host, port)
                    writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
                    readers.append((reader, writer))
                await wait_for(lambda: len(view._streams) == 3, 10, "three streams")  # noqa: B023
                loop = asyncio.get_running_loop()
                started = loop.time()
                if stalled == "cut":  # their writes time out: each connection is aborted
                    await wait_for(lambda: not view._streams, 20, "the streams cut")  # noqa: B023
                else:
                    await view.close()
                assert loop.time() - started < 15
                for reader, _ in readers:  # and the connection is gone, not left to drain
                    with contextlib.suppress(ConnectionError):
                        while await asyncio.wait_for(reader.read(2**20), 10):
                            pass
            finally:
                for _, writer in readers:
                    writer.close()
                await view.close()


def test_text_from_the_network_is_escaped() -> None:
    row = {
        "name": "<script>alert(1)</script>",
        "id": "0" * 16,
        "task": "<b>x</b>",
        "policy": "open",
        "members": 1,
        "capacity": 2,
        "leader": "198.18.0.1:8470",
        "term": 1,
        "round": 3,
        "accuracy": 0.5,
        "advert_age_s": 1.0,
    }
    page = render_page([row], None)
    assert "<script>alert" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parsed = Tables()
    parsed.feed(page)
    assert parsed.tables["groups"][1][0] == "<script>alert(1)</script>"  # shown as text
    assert len(parsed.scripts) == 1 and "textContent" in parsed.scripts[0]
    assert "http" not in parsed.scripts[0].replace("/api/state", "")  # nothing from elsewhere
