"""ClientApps in a worker process: training stops sharing a GIL with the node's networking.

``ClientProcess`` (the parent's side) starts ``python -m mycelium_p2p.fl.worker`` and sends it
ClientApp calls over the worker's stdin; the worker runs them one after another and answers on
its stdout. One worker can serve many nodes of one process (each keeps its own Flower
``Context`` there, so ``context.state`` lives as long as the worker). The parent keeps the
worker one call ahead (it writes the next request while the worker trains on the previous
one) and picks that call by batch: the calls of one group's round phase go out together,
oldest batch first. Served in arrival order, the groups sharing a worker would all finish
their phase at about the same time and all aggregate while the worker sits idle; batch by
batch, one group aggregates while the worker trains for the next.

Frames, both ways: a 4-byte big-endian length, a msgpack header, then the array segments whose
lengths the header lists (the same records description as on the group channels, ``wire``).
The worker exits when its stdin closes: when the parent stops it, and when the parent dies,
even by SIGKILL, so no worker outlives its node. A worker that dies fails the calls it held
(the leader sees a client error) and the next call starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import signal
import struct
import sys
from dataclasses import dataclass, field
from typing import IO, Any

import msgpack
from flwr.app import Error, Message
from flwr.app.message import make_message
from flwr.common.constant import ErrorCode

from ..errors import WorkerError
from .flower_log import keep_flower_quiet
from .messages import ensure_task_identity, make_metadata
from .wire import decode_content, encode_content

#: the ClientApp spec of the built-in digits task (anything else is a ``module:attr``)
DEFAULT_APP = "default"
_LEN = struct.Struct(">I")
_MAX_HEADER = 16 << 20
_MAX_SEGMENT = 1 << 31
_AHEAD = 2  # calls in the worker at once: the one it runs and the next


@dataclass(order=True)
class _Queued:
    order: int  # the batch's place in line
    call_id: int
    batch: str = field(compare=False)
    frame: list[bytes] = field(compare=False)


def _pack(header: dict[str, Any], segments: list[bytes]) -> list[bytes]:
    header = {**header, "seg": [len(s) for s in segments]}
    body = msgpack.packb(header, use_bin_type=True)
    return [_LEN.pack(len(body)), body, *segments]


def _check_header(body: bytes) -> dict[str, Any]:
    header: object = msgpack.unpackb(body, raw=False)
    seg = header.get("seg") if isinstance(header, dict) else None
    if (
        not isinstance(header, dict)
        or not isinstance(seg, list)
        or not all(isinstance(n, int) and 0 <= n < _MAX_SEGMENT for n in seg)
    ):
        raise WorkerError("frame header without segment lengths")
    return header


def _message_fields(message: Message) -> dict[str, Any]:
    m = message.metadata
    return {
        "mid": m.message_id,
        "src": m.src_node_id,
        "dst": m.dst_node_id,
        "type": m.message_type,
        "fgid": m.group_id,
    }


class ClientProcess:
    """A worker process running ClientApps for the nodes of this process.

    Started on first use (and again after it died); ``close`` stops it. Give one to several
    ``Node``s (``Node(config, compute=worker)``) or let a node own one
    (``FlSettings(isolation="process")`` in its ``NodeConfig``).
    """

    def __init__(self, *, torch_threads: int = 0, start_timeout: float = 120.0) -> None:
        """``torch_threads``: the worker's torch CPU threads (0: torch's default), if its
        ClientApps use torch (it is never imported for them)."""
        self.torch_threads = torch_threads
        self.start_timeout = start_timeout
        self.starts = 0  # how many worker processes were started (1 unless one died)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], list[bytes]]]] = {}
        self._queue: list[_Queued] = []  # calls not yet written to the worker
        self._in_worker = 0  # calls written and not yet answered
        self._next_id = 0
        self._starting = asyncio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The running worker's pid (None before the first call and after it exited)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def call(
        self,
        app: str,
        node_id: int,
        node_config: dict[str, Any],
        message: Message,
        batch: str = "",
    ) -> Message:
        """Run ``message`` through the ClientApp ``app`` (spec) as node ``node_id``.

        ``batch`` names the calls that belong together (one group's round): queued calls go
        to the worker batch by batch, oldest batch first. The ClientApp's own failures come
        back as Error replies, like in a thread; raises ``WorkerError`` when the worker cannot
        be reached or dies during the call.
        """
        proc = await self._ensure_started()
        records, segments = encode_content(message.content)
        self._next_id += 1
        call_id = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        header = {
            "id": call_id,
            "app": app,
            "node": node_id,
            "cfg": node_config,
            "records": records,
            **_message_fields(message),
        }
        # a batch with calls still queued keeps its place in line; one without queues anew
        order = next((q.order for q in self._queue if q.batch == batch), call_id)
        heapq.heappush(self._queue, _Queued(order, call_id, batch, _pack(header, segments)))
        try:
            self._feed()
            assert proc.stdin is not None
            await proc.stdin.drain()
            reply, reply_segments = await future
        except (ConnectionError, BrokenPipeError) as exc:
            raise WorkerError(f"the ClientApp worker is gone: {exc}") from None
        finally:
            self._pending.pop(call_id, None)
        if "error" in reply:
            code, reason = reply["error"]
            return Message(Error(int(code), str(reason)), reply_to=message)
        return Message(decode_content(reply["records"], reply_segments), reply_to=message)

    def _feed(self) -> None:
        """Keep the worker busy and one call ahead: write queued calls, best batch first.

        Never waits: the reply reader calls it too, and a reader waiting for the worker to
        take a request while the worker waits for us to take its reply would be a deadlock.
        """
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        while self._queue and self._in_worker < _AHEAD:
            item = heapq.heappop(self._queue)
            if item.call_id not in self._pending:  # its caller gave up
                continue
            self._in_worker += 1
            proc.stdin.writelines(item.frame)

    async def _ensure_started(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._closed:
                raise WorkerError("the ClientApp worker was closed")
            proc, reader = self._proc, self._reader
            if proc is not None and proc.returncode is None and reader and not reader.done():
                return proc
            await self._reap()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            try:
                self._proc = await asyncio.wait_for(
                    asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "mycelium_p2p.fl.worker",
                        str(self.torch_threads),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        env=env,
                    ),
                    self.start_timeout,
                )
            except (OSError, TimeoutError) as exc:
                raise WorkerError(f"cannot start the ClientApp worker: {exc}") from None
            self.starts += 1
            self._reader = asyncio.create_task(self._read_replies(self._proc), name="worker-io")
            return self._proc

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        reason = "the ClientApp worker exited"
        try:
            while True:
                (size,) = _LEN.unpack(await proc.stdout.readexactly(_LEN.size))
                if size > _MAX_HEADER:
                    raise WorkerError(f"reply header of {size} bytes")
                header = _check_header(await proc.stdout.readexactly(size))
                segments = [await proc.stdout.readexactly(n) for n in header["seg"]]
                self._in_worker -= 1
                future = self._pending.get(header.get("id", -1))
                if future is not None and not future.done():
                    future.set_result((header, segments))
                self._feed()
        except asyncio.IncompleteReadError:
            pass
        except Exception as exc:  # an unreadable reply: this worker cannot be trusted further
            reason = f"the ClientApp worker answered garbage: {type(exc).__name__}: {exc}"
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerError(reason))

    async def _reap(self) -> None:
        proc, reader, self._proc, self._reader = self._proc, self._reader, None, None
        self._in_worker = 0
        for item in self._queue:  # written to nobody: their callers hear it now
            future = self._pending.get(item.call_id)
            if future is not None and not future.done():
                future.set_exception(WorkerError("the ClientApp worker was stopped"))
        self._queue.clear()
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the worker's cue to exit
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def close(self) -> None:
        """Stop the worker (it finishes the call it is in); pending calls fail."""
        self._closed = True
        async with self._starting:
            await self._reap()


# -- the worker process ------------------------------------------------------------------------


def _read_exactly(stream: IO[bytes], n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> tuple[dict[str, Any], list[bytes]] | None:
    prefix = _read_exactly(stream, _LEN.size)
    if prefix is None:
        return None
    (size,) = _LEN.unpack(prefix)
    if size > _MAX_HEADER:
        raise WorkerError(f"request header of {size} bytes")
    body = _read_exactly(stream, size)
    if body is None:
        return None
    header = _check_header(body)
    segments = []
    for n in header["seg"]:
        segment = _read_exactly(stream, n)
        if segment is None:
            return None
        segments.append(segment)
    return header, segments


def limit_torch_threads(threads: int) -> None:
    """Hold torch to ``threads`` CPU threads (0: its default), if the process has imported it.

    Never imports torch itself: a node whose ClientApp is numpy-only must not pay ~300 MB for
    it. Call it once the ClientApp is loaded; an app importing torch later sets its own.
    """
    torch = sys.modules.get("torch")
    if threads > 0 and torch is not None:
        torch.set_num_threads(threads)


class _Worker:
    """The worker's state: one ClientApp per spec, one Flower ``Context`` per node."""

    def __init__(self, torch_threads: int = 0) -> None:
        from flwr.app import Context, RecordDict

        self._context_type, self._record_dict = Context, RecordDict
        self.torch_threads = torch_threads
        self.apps: dict[str, Any] = {}
        self.contexts: dict[int, Any] = {}

    def app(self, spec: str) -> Any:
        if spec not in self.apps:
            if spec == DEFAULT_APP:
                from .task import make_client_app

                self.apps[spec] = make_client_app()
            else:
                from .client import load_client_app

                self.apps[spec] = load_client_app(spec)
            limit_torch_threads(self.torch_threads)
        return self.apps[spec]

    def run(
        self, header: dict[str, Any], segments: list[bytes]
    ) -> tuple[dict[str, Any], list[bytes]]:
        """One call: the reply's header fields and segments."""
        node = int(header["node"])
        context = self.contexts.get(node)
        if context is None:
            context = self.contexts[node] = self._context_type(
                run_id=0,
                node_id=node,
                node_config=dict(header["cfg"]),
                state=self._record_dict(),
                run_config={},
            )
        message = make_message(
            make_metadata(
                message_id=str(header["mid"]),
                src=int(header["src"]),
                dst=int(header["dst"]),
                message_type=str(header["type"]),
                group_id=str(header["fgid"]),
            ),
            content=decode_content(header["records"], segments),
        )
        reply = self.app(str(header["app"]))(message, context)
        if reply.has_error():
            return {"error": [reply.error.code, reply.error.reason or "ClientApp failed"]}, []
        records, reply_segments = encode_content(reply.content)
        return {"records": records}, reply_segments

    def answer(self, header: dict[str, Any], segments: list[bytes]) -> list[bytes]:
        """The reply frame; the ClientApp's exceptions (and a bad request) are Error replies."""
        try:
            fields, reply_segments = self.run(header, segments)
        except Exception as exc:
            code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            fields, reply_segments = {"error": [code, f"{type(exc).__name__}: {exc}"]}, []
        return _pack({"id": header.get("id", -1), **fields}, reply_segments)


def main(argv: list[str]) -> int:
    """Answer requests on stdin until it closes."""
    # Ctrl-C in a terminal reaches the whole process group: the parent node decides when we
    # stop (it closes our stdin), so a call in progress is finished, not torn up
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the protocol owns the real stdout; whatever the ClientApp prints goes to stderr
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=1 << 16)
    ensure_task_identity()
    keep_flower_quiet(every_thread=True)  # this process is all ours
    worker = _Worker(torch_threads=int(argv[0]) if argv else 0)
    while True:
        try:
            frame = _read_frame(requests)
        except Exception as exc:  # not our parent's protocol: nothing more can be read
            print(f"mycelium-p2p worker: unreadable request: {exc}", file=sys.stderr)
            return 2
        if frame is None:  # the parent closed our stdin, or died
            return 0
        try:
            out.writelines(worker.answer(*frame))
            out.flush()
        except BrokenPipeError:  # the parent is gone
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
