"""``GroupGrid``: Flower's ``Grid``, with messages travelling to group members over our channels.

Stock strategies call ``get_node_ids`` and ``send_and_receive`` from the thread that runs
``strategy.start``; each call hops onto the node's event loop. What a Grid must get right
(Flower 1.42):

- ``Message()`` reads the process-global ``TaskIdentity``; we set placeholders once and
  rebuild every message's metadata ourselves (messages.py), so several leaders can share a
  process.
- Strategies put one shared ``RecordDict`` in every message: we serialize per destination.
- Replies are matched by id and must come from the member the request went to (the channel
  is authenticated to that member's key).
- A missing reply would be silently dropped: a dead or slow member becomes an ``Error`` reply
  (``NODE_UNAVAILABLE``) after the timeout, never a hang.
- A reply with the wrong arrays, without ``num-examples`` or with metric keys unlike the
  others' would abort ``start()`` (``InconsistentMessageReplies``): it becomes an ``Error``.
- A reply that would poison the aggregate (NaN or infinite values, a huge update, an absurd
  ``num-examples``) becomes an ``Error`` too, logged with the member's key: see screening.py.
- A member in a newer term aborts the round (``StepDown``): a deposed leader completes nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, Error, Message, RecordDict
from flwr.app.message import make_message
from flwr.common.constant import ErrorCode

from ..aio import loop_time
from ..errors import ChannelError, RemoteError, StepDown, WireError
from ..group.member import GroupMember
from ..group.state import Member
from .limits import Screening
from .messages import LEADER_NODE_ID, RunGrid, ensure_task_identity, flower_node_id, make_metadata
from .screening import check_reply, screen_round
from .wire import decode_content, encode_content

log = logging.getLogger(__name__)

#: what a member's reply may hold beyond twice the bytes it was sent (its metrics, a header)
REPLY_ALLOWANCE = 2**20


class _NoReply(Exception):
    """No reply to aggregate: why, as Flower's error code and reason; ``dropped`` when a reply
    came but was refused (logged as a warning)."""

    def __init__(self, code: int, reason: str, *, dropped: bool = False) -> None:
        super().__init__(reason)
        self.code, self.reason, self.dropped = code, reason, dropped


LocalClient = Callable[[Message], Awaitable[Message]]


class GroupGrid(RunGrid):
    """A Grid over the members of one group, for the leader of one term."""

    def __init__(
        self,
        group: GroupMember,
        loop: asyncio.AbstractEventLoop,
        local_client: LocalClient,
        *,
        reply_timeout: float = 120.0,
        screening: Screening | None = None,
        screen: bool = True,
    ) -> None:
        """``screening``: the limits replies are held to (default ``Screening()``). ``screen``
        False keeps only the structural checks Flower needs: for measuring what screening buys
        (scripts/bench_poison.py), never for a real group."""
        ensure_task_identity()
        self.group = group
        self.loop = loop
        self.local_client = local_client
        self.reply_timeout = reply_timeout
        self.screening = (screening or Screening()) if screen else None
        self.term = group.term
        self._keys: dict[int, bytes] = {}
        self._round_keys: list[bytes] | None = None
        self._pending: dict[str, concurrent.futures.Future[Message]] = {}
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._aborted = False
        #: each member's trained arrays in the latest round, if they passed screening (the
        #: leader reads their updates after the strategy has aggregated them)
        self.trained: dict[bytes, ArrayRecord] = {}
        #: members whose ClientApp raised: (times in this term, the error it sent back)
        self.app_errors: dict[bytes, tuple[int, str]] = {}

    def get_node_ids(self) -> Iterable[int]:
        """The members at the round's start, the same for every call within it (a strategy
        counts them, then waits until that many are there: a member leaving in between would
        make it wait forever). Members that leave mid-round answer as unavailable."""
        if self._round_keys is None:
            self._round_keys = self._members_now()
        self._keys = {flower_node_id(key): key for key in self._round_keys}
        return list(self._keys)

    def new_round(self) -> None:
        """Take the roster afresh at the next ``get_node_ids`` (called between rounds)."""
        self._round_keys = None

    def _members_now(self) -> list[bytes]:
        """The roster, read on the event loop (it changes there)."""

        async def snapshot() -> list[bytes]:
            return [m.key for m in self.group.members()]

        try:
            asyncio.get_running_loop()
            return [m.key for m in self.group.members()]  # already on the loop
        except RuntimeError:
            if self._aborted or self.loop.is_closed():
                raise StepDown("the leader stopped") from None
            return asyncio.run_coroutine_threadsafe(snapshot(), self.loop).result()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            self._pending[message_id] = asyncio.run_coroutine_threadsafe(
                self._exchange(message, message_id), self.loop
            )
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        done = []
        for message_id in message_ids:
            future = self._pending.get(message_id)
            if future is not None and future.done():
                done.append(self._pending.pop(message_id).result())
        return done

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send every message, wait for every reply (or its Error), validate them together."""
        messages = list(messages)
        if not messages:
            return []
        wait = self.reply_timeout if timeout is None else min(timeout, self.reply_timeout)
        return self._on_loop(self._exchange_all(messages, wait))  # type: ignore[no-any-return]

    def _on_loop(self, coro: Any) -> Any:
        """Run ``coro`` on the group's event loop from the strategy's thread and wait for it;
        ``StepDown`` once the leader stopped (``abort``)."""
        if self._aborted or self.loop.is_closed():
            coro.close()
            raise StepDown("the leader stopped")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._inflight.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise StepDown("the leader stopped") from None
        finally:
            self._inflight.discard(future)

    def abort(self) -> None:
        """Called on the loop when leading stops: the strategy thread's waits end at once."""
        self._aborted = True
        for future in list(self._inflight):
            future.cancel()

    # -- on the event loop ---------------------------------------------------------------------

    async def _exchange_all(self, messages: list[Message], timeout: float) -> list[Message]:
        replies = await asyncio.gather(
            *(self._exchange(m, uuid.uuid4().hex, timeout) for m in messages)
        )
        replies = screen_round(messages, replies, self.screening, self._name)
        for reply in replies:
            if reply.has_content() and reply.metadata.message_type.startswith("train"):
                key = self._keys.get(reply.metadata.src_node_id)
                if key is not None:
                    self.trained[key] = _shallow(next(iter(reply.content.array_records.values())))
        return replies

    def _name(self, node_id: int) -> str:
        """A member's short name in logs: the start of its key in hex."""
        key = self._keys.get(node_id)
        return key.hex()[:8] if key is not None else f"node {node_id}"

    async def _exchange(
        self, message: Message, message_id: str, timeout: float | None = None
    ) -> Message:
        """Send ``message`` to its member (or our own ClientApp) and return the reply, or an
        error ``Message`` saying why there is none; ``StepDown`` if our term has ended."""
        timeout = self.reply_timeout if timeout is None else timeout
        meta = message.metadata
        dst = meta.dst_node_id
        key = self._keys.get(dst)
        reply_metadata = functools.partial(
            make_metadata,
            src=dst,
            dst=LEADER_NODE_ID,
            message_type=meta.message_type,
            group_id=meta.group_id,
            reply_to=message_id,
        )

        def error(code: int, reason: str) -> Message:
            return make_message(
                reply_metadata(message_id=uuid.uuid4().hex), error=Error(code, reason)
            )

        member = self.group.roster.get(key) if key is not None else None
        if member is None:
            return error(ErrorCode.NODE_UNAVAILABLE, f"node {dst} is not in the group")
        if not self.group.is_leader or self.group.term != self.term:
            raise StepDown("no longer the leader of this term")
        try:
            if member.key == self.group.me:
                content = await self._ask_self(message, message_id, timeout)
            else:
                content = await self._ask_member(member, message, message_id, timeout)
            problem = check_reply(message.content, content, meta.message_type, self.screening)
            if problem is not None:
                raise _NoReply(ErrorCode.REPLY_MESSAGE_UNAVAILABLE, problem, dropped=True)
        except _NoReply as no:
            if no.dropped:  # a reply that came, but is not aggregated
                log.warning("reply from member %s dropped: %s", self._name(dst), no.reason)
            return error(no.code, no.reason)
        return make_message(reply_metadata(message_id=uuid.uuid4().hex), content=content)

    async def _ask_self(self, message: Message, message_id: str, timeout: float) -> RecordDict:
        """Our own ClientApp's reply to ``message``."""
        meta = message.metadata
        metadata = make_metadata(
            message_id=message_id,
            src=LEADER_NODE_ID,
            dst=meta.dst_node_id,
            message_type=meta.message_type,
            group_id=meta.group_id,
        )
        outgoing = make_message(metadata, content=_copy(message.content))
        try:
            reply = await asyncio.wait_for(self.local_client(outgoing), timeout)
        except asyncio.TimeoutError:
            raise _NoReply(ErrorCode.NODE_UNAVAILABLE, "own ClientApp timed out") from None
        if reply.has_error():
            raise _NoReply(reply.error.code, reply.error.reason or "")
        return reply.content

    async def _ask_member(
        self, member: Member, message: Message, message_id: str, timeout: float
    ) -> RecordDict:
        """``member``'s reply to ``message`` (``fl.msg`` over its channel). The reply may hold
        twice what we sent, plus 1 MiB: a model of the shapes sent, and its metrics."""
        meta = message.metadata
        records, segments = encode_content(message.content)
        header = {
            "gid": self.group.group_id,
            "term": self.term,
            "cert": self.group.cert_blob,
            "mid": message_id,
            "type": meta.message_type,
            "fgid": meta.group_id,
            "records": records,
        }
        cap = 2 * sum(memoryview(s).nbytes for s in segments) + REPLY_ALLOWANCE
        request = self.group.channels.request(
            member.addr, member.key, "fl.msg", header, segments, timeout=timeout, max_reply=cap
        )
        try:
            answer, segs = await self._while_present(member, request)
        except RemoteError as exc:
            if exc.code == "stale-term" and await self.group.heed_stale_term(member):
                raise StepDown(f"member {member.key.hex()[:8]} proved a newer term") from None
            if exc.code == "client-error":
                self._app_failed(member.key, exc.reason)
            raise _NoReply(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, exc.reason) from None
        except ChannelError as exc:
            raise _NoReply(ErrorCode.NODE_UNAVAILABLE, str(exc)) from None
        if answer.get("mid") != message_id:
            raise _NoReply(ErrorCode.REPLY_MESSAGE_UNAVAILABLE, "reply to another message")
        try:
            return decode_content(answer.get("records"), segs)
        except WireError as exc:
            raise _NoReply(ErrorCode.REPLY_MESSAGE_UNAVAILABLE, str(exc), dropped=True) from None

    def _app_failed(self, key: bytes, reason: str) -> None:
        """A member's ClientApp raised: say so once per member and error, then count."""
        count, last = self.app_errors.get(key, (0, ""))
        reason = reason[:200]
        if reason != last or count + 1 in (10, 100):
            log.warning(
                "group %s: member %s's ClientApp failed (%d times this term): %s",
                self.group.group_id,
                key.hex()[:8],
                count + 1,
                reason,
            )
        self.app_errors[key] = (count + 1, reason)
        while len(self.app_errors) > 64:  # members come and go: a bounded table
            del self.app_errors[next(iter(self.app_errors))]

    async def _while_present(self, member: Any, request: Any) -> Any:
        """Await ``request`` unless the member goes silent first (a cut cable sends no reset):
        then the round goes on without it instead of waiting out the reply timeout."""
        task = asyncio.ensure_future(request)
        # if we stop waiting, whatever it ends with is not ours to report
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        config = self.group.config
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=config.heartbeat_interval)
                if done:
                    return task.result()
                now = self.group.roster.get(member.key)
                if now is None or loop_time() - now.last_seen > config.member_timeout:
                    raise ChannelError(f"member {member.key.hex()[:8]} went silent mid-round")
        finally:
            task.cancel()


def _shallow(record: ArrayRecord) -> ArrayRecord:
    """A new ArrayRecord holding the same Arrays: FedMedian and FedTrimmedAvg pop the arrays
    out of the replies they aggregate, which must not empty the leader's view of them."""
    out = ArrayRecord()  # filled in place: ArrayRecord(dict) would rebuild every Array
    for key, array in record.items():
        out[key] = array
    return out


def _copy(content: RecordDict) -> RecordDict:
    """A per-destination copy (strategies share one RecordDict between messages)."""
    records, segments = encode_content(content)
    return decode_content(records, segments)
