"""The member side: run the node's Flower ``ClientApp`` on messages from the group's leader."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.app.message import make_message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from msgspec import Meta

from ..errors import ConfigError, TrainConfigRefused, WireError, WorkerError
from ..group.member import GroupMember
from ..group.transport import Channel, Reply
from ..records.leadership import MAX_CERT_BYTES, MAX_TERM
from .flower_log import keep_flower_quiet
from .limits import TrainCaps, bound_train_config
from .messages import LEADER_NODE_ID, ensure_task_identity, flower_node_id, make_metadata
from .wire import decode_content, encode_content
from .worker import DEFAULT_APP, ClientProcess

log = logging.getLogger(__name__)


@dataclass
class AppFailures:
    """How this node's ClientApp has been failing: in all, in a row, and the last error."""

    total: int = 0
    streak: int = 0
    last: str = ""
    logged: int = 0  # how many distinct errors were logged with their traceback

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "streak": self.streak, "last": self.last}


class FlRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An ``fl.msg`` header: a Flower message from the group's leader."""

    gid: str
    term: Annotated[int, Meta(ge=0, le=MAX_TERM)]
    cert: Annotated[bytes, Meta(max_length=MAX_CERT_BYTES)] = b""
    mid: Annotated[str, Meta(max_length=128)]
    type: Annotated[str, Meta(max_length=64)]
    fgid: Annotated[str, Meta(max_length=128)] = ""
    records: Any


def load_client_app(spec: str) -> ClientApp:
    """``module:attr`` naming a Flower ``ClientApp`` (the user's, unmodified)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--client-app {spec!r}: expected module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises at import
        raise ConfigError(
            f"--client-app {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    app = getattr(module, attr, None)
    if app is None:
        raise ConfigError(f"--client-app {spec!r}: {module_name} has no attribute {attr!r}")
    if not isinstance(app, ClientApp):
        raise ConfigError(f"--client-app {spec!r} is a {type(app).__name__}, not a flwr ClientApp")
    return app


def bound_content(content: RecordDict, caps: TrainCaps) -> RecordDict:
    """``content`` with each ConfigRecord held to ``caps`` (``bound_train_config``); raises
    ``TrainConfigRefused``. Arrays and metrics pass untouched."""
    for name, record in list(content.config_records.items()):
        content[name] = ConfigRecord(bound_train_config(record, caps))
    return content


def _unavailable(message: Message, reason: str) -> Message:
    return Message(Error(ErrorCode.NODE_UNAVAILABLE, reason), reply_to=message)


class ClientRunner:
    """Runs one ClientApp for one node: for the leader's requests and for the leader itself."""

    def __init__(
        self,
        app: ClientApp,
        node_key: bytes,
        node_config: dict[str, Any],
        executor: Executor | ClientProcess | None = None,
        app_spec: str = DEFAULT_APP,
        caps: TrainCaps | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        """``executor``: where the ClientApp runs. Default: a thread of this runner's own.
        Nodes sharing a process may share one (see ``Node``); the runner does not shut it down.
        A ``ClientProcess`` runs the app named by ``app_spec`` (``module:attr``, or the digits
        task) in a worker process; Flower's ``context.state`` then lives in that worker.
        ``caps``: the most training a leader may ask of this member (default ``TrainCaps()``).
        ``run_config``: the ClientApp's ``context.run_config`` (a Flower App's run config).
        """
        ensure_task_identity()
        keep_flower_quiet()
        self.app = app
        self.node_id = flower_node_id(node_key)
        self.context = Context(
            run_id=0,
            node_id=self.node_id,
            node_config=node_config,
            state=RecordDict(),
            run_config=dict(run_config or {}),
        )
        self._lock = asyncio.Lock()  # one ClientApp call at a time: one model, one CPU budget
        self._closed = False
        # Not asyncio's default pool: with many nodes in one process it runs dry while every
        # leader's strategy thread waits for a ClientApp call (a deadlock). A ClientApp call
        # waits for nothing else, so a pool given to us only serialises them.
        self._owned = executor is None
        self.app_spec = app_spec
        self.caps = caps or TrainCaps()
        self._process: ClientProcess | None = None
        self._thread: Executor | None = None
        self.failures = AppFailures()
        self.on_failure: Callable[[AppFailures], None] = lambda failures: None
        self._seen_errors: set[str] = set()
        if isinstance(executor, ClientProcess):
            self._process = executor
        else:
            self._thread = executor or ThreadPoolExecutor(1, thread_name_prefix="clientapp")

    @property
    def worker(self) -> ClientProcess | None:
        """The worker process this runner's ClientApp runs in (None: a thread)."""
        return self._process

    async def run(self, message: Message, batch: str = "", *, count: bool = True) -> Message:
        """Call the ClientApp (in a thread or a worker); its exceptions become Error replies.

        ``batch`` (the group, for a round's messages) orders calls in a shared worker process.
        A raising ClientApp is logged with its traceback once per distinct error, then counted
        (``failures``); ``on_failure`` hears of each failure. Not with ``count=False``: a
        model a peer sent us to measure may fail our evaluate, and that is not our app failing.
        """
        reply = await self._run(message, batch)
        if not count:
            return reply
        if reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION:
            self._failed(reply.error.reason or "ClientApp failed", message.metadata.message_type)
        elif not reply.has_error():
            self.failures.streak = 0
        return reply

    def _failed(self, reason: str, kind: str) -> None:
        failures = self.failures
        failures.total += 1
        failures.streak += 1
        failures.last = reason.splitlines()[0][:200] if reason else "ClientApp failed"
        first_line = failures.last
        if first_line not in self._seen_errors and len(self._seen_errors) < 16:
            self._seen_errors.add(first_line)
            log.error("this node's ClientApp failed on a %s message:\n%s", kind, reason)
        elif failures.total in (2, 10) or failures.total % 100 == 0:
            log.warning(
                "this node's ClientApp has failed %d times (%d in a row); last: %s",
                failures.total,
                failures.streak,
                first_line,
            )
        self.on_failure(failures)

    async def _run(self, message: Message, batch: str) -> Message:
        async with self._lock:
            if self._process is not None:
                if self._closed:
                    return _unavailable(message, "node is stopping")
                try:
                    return await self._process.call(
                        self.app_spec,
                        self.node_id,
                        dict(self.context.node_config),
                        message,
                        batch=batch,
                    )
                except WorkerError as exc:
                    return _unavailable(message, str(exc))
            assert self._thread is not None
            loop = asyncio.get_running_loop()
            try:
                # in the node's context: its log records carry its facts (``logcontext``)
                call = contextvars.copy_context().run
                return await loop.run_in_executor(self._thread, call, self._call, message)
            except RuntimeError:  # the node is stopping: its ClientApp thread is gone
                return _unavailable(message, "node is stopping")

    def close(self) -> None:
        self._closed = True
        if self._owned and self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)

    def _call(self, message: Message) -> Message:
        if self._closed:  # queued in a shared pool before the node stopped
            return _unavailable(message, "node is stopping")
        try:
            reply = self.app(message, self.context)
        except Exception as exc:
            # the first line goes to the leader (as Flower's Error); the traceback stays here
            reason = f"{type(exc).__name__}: {exc}"
            return Message(
                Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{reason}\n{traceback.format_exc()}"),
                reply_to=message,
            )
        return reply

    async def handle(
        self, group: GroupMember, channel: Channel, header: dict[str, Any], segments: list[bytes]
    ) -> Reply:
        """Answer ``fl.msg`` from the proven leader of our group's current term (and only from
        it): a stranger, a member or a deposed leader cannot make this node train."""
        try:
            request = msgspec.convert(header, FlRequest, strict=True)
        except msgspec.ValidationError as exc:
            return Reply.fail("bad-request", f"fl.msg: {exc}")
        refusal = group.authorize(channel.peer_key, request.term, request.cert)
        if refusal is not None:
            return Reply.fail(refusal, f"my term is {group.term}")
        try:
            content = decode_content(request.records, segments)
        except WireError as exc:
            return Reply.fail("bad-request", str(exc))
        try:  # the leader chooses the training, within this member's own caps
            content = bound_content(content, self.caps)
        except TrainConfigRefused as exc:
            return Reply.fail("bad-config", str(exc))
        message = make_message(
            make_metadata(
                message_id=request.mid,
                src=LEADER_NODE_ID,
                dst=self.node_id,
                message_type=request.type,
                group_id=request.fgid,
            ),
            content=content,
        )
        started = time.perf_counter()
        reply = await self.run(message, batch=group.group_id)
        if reply.has_error():  # the error's first line, as Flower reports it; not our traceback
            reason = (reply.error.reason or "ClientApp failed").splitlines()[0]
            return Reply.fail("client-error", reason[:200])
        records, segs = encode_content(reply.content)
        return Reply(
            {"mid": request.mid, "records": records, "seconds": time.perf_counter() - started},
            segs,
        )
