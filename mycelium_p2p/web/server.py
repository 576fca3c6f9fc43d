"""``WebView``: a read-only page, JSON state and Prometheus metrics, served in the event loop of
the node (or DHT peer) it shows, with ``aiohttp``: no second process, no thread.

Routes: ``/`` (the page), ``/api/state`` (what the page shows, as JSON), ``/api/events`` (the
same state pushed as server-sent events, one every ``STATE_EVERY`` s), ``/metrics``. Nothing
here changes the node; nothing secret is shown. The group listing is read from the DHT at most
every ``LISTING_EVERY`` s, and the state made at most every ``STATE_EVERY`` s, however many
browsers poll or listen: ten browsers cost the node what one does (``scripts/bench_web.py``).
At most ``MAX_STREAMS`` event streams are open at once (more get 503 and poll instead). A
stream whose reader stops reading is cut (its connection aborted, its buffer dropped) once a
write has waited ``WRITE_TIMEOUT`` s; closing the view cuts every stream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..addresses import Address
from ..dht import DhtNode
from .metrics import CONTENT_TYPE, NodeCollector, render
from .page import render_page
from .state import network_state, node_state

if TYPE_CHECKING:
    from ..node.node import Node

__all__ = ["LISTING_EVERY", "MAX_STREAMS", "STATE_EVERY", "WRITE_TIMEOUT", "WebView"]

LISTING_EVERY = 3.0  # s: how stale the group listing may be
STATE_EVERY = 1.0  # s: how stale the page's state may be (one render shared by all who poll)
MAX_STREAMS = 32  # event streams open at once
WRITE_TIMEOUT = 10.0  # s: a stream whose write waits this long (its reader stopped) is cut
SHUTDOWN_TIMEOUT = 2.0  # s: what closing the view waits for requests still being answered


class WebView:
    """Serves ``node`` (its DHT, group and traffic) or, with ``node`` None, a DHT peer's view
    of the network."""

    def __init__(self, dht: DhtNode, node: Node | None = None) -> None:
        self.dht, self.node = dht, node
        self.collector = NodeCollector(dht, node)
        self._groups: list[dict[str, Any]] = []
        self._made: tuple[float, dict[str, Any], bytes] | None = None  # (when, state, JSON)
        self._read_at = float("-inf")
        self._reading: asyncio.Lock | None = None
        self._rendering: asyncio.Lock | None = None
        self._runner: web.AppRunner | None = None
        self._streams: dict[int, web.Request] = {}  # event streams open now, by id()
        self.max_streams = MAX_STREAMS
        self._closing: asyncio.Event | None = None
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/metrics", self._metrics)
        self.app = app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Serve on ``host:port`` (loopback unless you name another address); the address."""
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        return (str(bound[0]), int(bound[1]))

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()  # event streams end at once, not at the runner's timeout
        for request in list(self._streams.values()):
            transport = request.transport
            if transport is not None and transport.get_write_buffer_size() > 0:
                _cut(request)  # a reader that stopped reading would hold the close up
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def groups(self) -> list[dict[str, Any]]:
        """The listing, read again when older than ``LISTING_EVERY`` (one read at a time)."""
        if self._reading is None:
            self._reading = asyncio.Lock()
        async with self._reading:
            if time.monotonic() - self._read_at >= LISTING_EVERY:
                with contextlib.suppress(Exception):  # a failed read: show the last listing
                    self._groups = await network_state(self.dht)
                self._read_at = time.monotonic()
        return self._groups

    async def state(self) -> dict[str, Any]:
        return (await self._current())[0]

    async def _current(self) -> tuple[dict[str, Any], bytes]:
        """The state and its JSON, made at most every ``STATE_EVERY`` s however many poll (one
        render at a time: those who ask meanwhile get the one it makes)."""
        if self._rendering is None:
            self._rendering = asyncio.Lock()
        async with self._rendering:
            if self._made is None or time.monotonic() - self._made[0] >= STATE_EVERY:
                groups = await self.groups()
                node = node_state(self.node) if self.node is not None else None
                state = {"groups": groups, "node": node, "t": time.time()}
                self._made = (time.monotonic(), state, json.dumps(state).encode())
            return self._made[1], self._made[2]

    async def _page(self, _: web.Request) -> web.Response:
        state = await self.state()
        return web.Response(
            text=render_page(state["groups"], state["node"]), content_type="text/html"
        )

    async def _state(self, request: web.Request) -> web.Response:
        body = (await self._current())[1]
        return web.Response(body=body, content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """The state as server-sent events: one ``data:`` line of JSON every ``STATE_EVERY`` s
        (the JSON has no newline), until the reader goes or the view closes."""
        closing = self._closing
        if closing is None or closing.is_set():
            return web.Response(status=503, text="closing")
        if len(self._streams) >= self.max_streams:
            return web.Response(status=503, text="too many event streams: poll /api/state")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        self._streams[id(request)] = request
        try:
            await response.prepare(request)
            while not closing.is_set():
                body = (await self._current())[1]
                await asyncio.wait_for(response.write(b"data: " + body + b"\n\n"), WRITE_TIMEOUT)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(closing.wait(), STATE_EVERY)
            return response
        except asyncio.TimeoutError:  # the reader stopped reading: drop it and its buffer
            _cut(request)  # (a close would wait for the buffer to drain: for ever)
            return response
        except ConnectionError:  # the reader left
            return response
        finally:
            del self._streams[id(request)]

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=render(self.collector), headers={"Content-Type": CONTENT_TYPE})


def _cut(request: web.Request) -> None:
    """Abort ``request``'s connection: its unsent bytes are dropped, its socket closed now."""
    transport = request.transport
    if transport is not None:
        transport.abort()
