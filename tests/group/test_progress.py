"""Long frames log their progress: a few lines while a big model moves over a channel, one when
it ends or breaks off, none for a small one, and a peer's claim is bounded before it counts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import AsyncIterator

import msgpack
import pytest

from mycelium_p2p.group import progress
from mycelium_p2p.group.progress import PROGRESS_BYTES, Progress
from mycelium_p2p.group.transport import Channel, ChannelServer, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async, wait_for

MiB = 2**20


async def _echo(channel: Channel, method: str, header: dict, segments: list[bytes]) -> Reply:
    return Reply({}, segments)


@contextlib.asynccontextmanager
async def _pair(
    plaintext: bool = False,
) -> AsyncIterator[tuple[ChannelServer, ChannelServer, tuple[str, int]]]:
    """Two echoing channel servers on loopback: (a, b, a's address)."""
    a, b = (
        ChannelServer(Identity.generate(), _echo, max_frame=64 * MiB, insecure_plaintext=plaintext)
        for _ in "ab"
    )
    try:
        addr_a = await a.listen("127.0.0.1", 0)
        await b.listen("127.0.0.1", 0)
        yield a, b, addr_a
    finally:
        await a.close()
        await b.close()


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == progress.__name__]


def _peer(server: ChannelServer) -> str:
    return server.identity.public_key.hex()[:16]


@pytest.mark.parametrize(
    "model",
    [[8 * MiB], [MiB] * 8, [128 * 2**10] * 64],
    ids=["one-8MiB-array", "8-arrays-of-1MiB", "64-arrays-of-128KiB"],
)
@pytest.mark.parametrize("plaintext", [False, True], ids=["noise", "plaintext"])
@run_async(timeout=60)
async def test_a_big_model_logs_its_quarters_and_its_end_each_way(
    model: list[int],
    plaintext: bool,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """b sends a model of 8 MiB to a, which echoes it: each of the four ends logs a line at
    25, 50 and 75% (no interval between lines here; a plain socket may move two quarters in
    one call) and one with its size, time and rate."""
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger=progress.__name__)
    segments = [bytes([i]) * n for i, n in enumerate(model)]
    async with _pair(plaintext) as (a, b, addr_a):
        _, back = await b.request(
            addr_a, a.identity.public_key, "g.model", {}, segments, timeout=30
        )
    assert back == segments
    lines = _lines(caplog)
    ends = [
        ("receiving", "received", f"from {_peer(b)}"),  # a's
        ("sending", "sent", f"to {_peer(b)}"),
        ("sending", "sent", f"to {_peer(a)}"),  # b's
        ("receiving", "received", f"from {_peer(a)}"),
    ]
    for going, gone, peer in ends:
        steps = [line for line in lines if line.startswith(f"{going} g.model {peer}: ")]
        percents = [int(re.search(r"\((\d+)%\)", line)[1]) for line in steps]  # type: ignore[index]
        # Noise moves at most a MiB between reports; a plain socket's send or recv may move
        # several quarters at once
        assert len(percents) == 3 or (plaintext and len(percents) < 3)
        assert percents == sorted(set(percents)) and all(25 <= p < 100 for p in percents)
        assert all(re.search(r"of 8\.0 MiB \(\d+%\), [\d.]+ MiB/s$", line) for line in steps)
        done = [line for line in lines if line.startswith(f"{gone} g.model {peer}: ")]
        assert len(done) == 1 and re.search(r": 8\.0 MiB in [\d.]+ s \([\d.]+ MiB/s\)$", done[0])
    assert len(lines) <= 4 * 4


@run_async(timeout=60)
async def test_a_big_model_that_moves_fast_logs_its_end_at_debug_only(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL", 3600.0)  # "fast": under the interval
    caplog.set_level(logging.DEBUG, logger=progress.__name__)
    segments = [b"x" * 8 * 2**20]
    async with _pair(False) as (a, b, addr_a):
        await b.request(addr_a, a.identity.public_key, "g.model", {}, segments, timeout=30)
    records = [r for r in caplog.records if r.name == progress.__name__]
    assert len([r for r in records if r.getMessage().startswith("sent g.model")]) == 2
    assert all(r.levelno == logging.DEBUG for r in records)


@run_async(timeout=60)
async def test_frames_under_the_threshold_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=progress.__name__)
    async with _pair() as (a, b, addr_a):
        for size in (0, MiB, PROGRESS_BYTES - 4096):
            await b.request(addr_a, a.identity.public_key, "g.model", {}, [bytes(size)], timeout=30)
    assert _lines(caplog) == []


def test_lines_stay_few_however_often_a_stream_reports(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line per quarter at most, none within PROGRESS_INTERVAL of the last: a transfer that
    reports every 4 KiB logs three lines, or none when it is quicker than the interval."""
    caplog.set_level(logging.INFO, logger=progress.__name__)
    steps = range(0, 8 * MiB + 1, 4096)
    quick = Progress(False, "peer", "fl.msg", 8 * MiB)
    for done in steps:
        quick.update(done)
    assert _lines(caplog) == []  # all of it well within a second
    monkeypatch.setattr(progress, "PROGRESS_INTERVAL", 0.0)
    slow = Progress(True, "peer", "fl.msg", 8 * MiB)
    for done in steps:
        slow.update(done)
    slow.finish()
    *quarters, end = _lines(caplog)
    assert [line.split(", ")[0] for line in quarters] == [
        f"receiving fl.msg from peer: {n:.1f} of 8.0 MiB ({25 * n // 2:.0f}%)" for n in (2, 4, 6)
    ]
    assert end.startswith("received fl.msg from peer: 8.0 MiB in ")


async def _raw_frame(channel: Channel, header: dict, body: bytes) -> None:
    """Write a request frame whose header claims what it likes, straight onto the stream."""
    head = msgpack.packb({"t": "q", "id": 1, "m": "g.model", "h": {}, **header})
    await channel._io.stream.send(
        [memoryview(struct.pack("!I", len(head)) + head), memoryview(body)]
    )


@pytest.mark.parametrize(
    ("method", "logged"),
    [("g.model", "g.model"), ("g.model\nreceived g.model from x: 8.0 MiB", "other")],
    ids=["named", "forged-line"],
)
@run_async(timeout=60)
async def test_a_frame_cut_short_says_how_far_it_got(
    method: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that claims 8 MiB and hangs up after 1 MiB: the receiver's line says so, naming
    the method only if it is a short printable one."""
    caplog.set_level(logging.INFO, logger=progress.__name__)
    async with _pair() as (a, b, addr_a):
        channel = await b.connect(addr_a, a.identity.public_key)
        await _raw_frame(channel, {"m": method, "seg": [8 * MiB]}, bytes(MiB))
        await asyncio.sleep(0.2)
        await channel.close()
        prefix = f"receiving {logged} from {_peer(b)} broke off at "
        await wait_for(lambda: any(x.startswith(prefix) for x in _lines(caplog)), 10, "the line")
    [line] = [x for x in _lines(caplog) if x.startswith(prefix)]
    assert re.search(r"broke off at 1\.0 of 8\.0 MiB after [\d.]+ s$", line)


@run_async(timeout=60)
async def test_a_claim_over_max_frame_is_refused_before_it_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A header claiming 1 TiB (over a's 64 MiB max_frame) closes the channel: no progress
    is made of it, nothing is sized by it."""
    caplog.set_level(logging.INFO)
    async with _pair() as (a, b, addr_a):
        channel = await b.connect(addr_a, a.identity.public_key)
        await _raw_frame(channel, {"seg": [2**40]}, b"")
        await wait_for(lambda: channel.closed, 10, "a to close the channel")
    assert _lines(caplog) == []
    assert any("frame segment lengths refused" in r.getMessage() for r in caplog.records)
