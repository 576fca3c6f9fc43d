"""The leader's training loop: one Flower ``strategy.start`` per group round, then a commit."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp.strategy import Strategy

from ..aio import loop_time
from ..errors import StepDown
from ..group.member import GroupMember
from ..group.state import ModelSnapshot
from .client import ClientRunner
from .flower_log import keep_flower_quiet
from .grid import GroupGrid
from .limits import Screening, bound_train_config
from .npy import to_ndarray
from .wire import decode_content, encode_content

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundReport:
    """One completed group round, as the leader saw it."""

    round: int
    term: int
    accuracy: float
    loss: float
    members: int
    seconds: float
    digest: str = ""  # the committed model's digest (hex): the same round is the same model


def snapshot_of(round_: int, arrays: ArrayRecord) -> ModelSnapshot:
    records, segments = encode_content(RecordDict({"arrays": arrays}))
    return ModelSnapshot.of(round_, records, segments)


def arrays_of(snapshot: ModelSnapshot) -> ArrayRecord:
    content = decode_content(snapshot.content, list(snapshot.segments))
    # what snapshot_of stores; another group's snapshot is not checked for it (a ClientApp
    # given another record type in its place fails to load it)
    return cast(ArrayRecord, content["arrays"])


async def _in_thread(
    owner: GroupGrid, thread: ThreadPoolExecutor, fn: Callable[..., Any], **kwargs: Any
) -> Any:
    """Run ``fn`` (a blocking ``strategy.start``) in ``thread``; if we are cancelled, unblock it."""
    try:
        call = partial(contextvars.copy_context().run, fn, **kwargs)  # logs with the node's facts
        return await asyncio.get_running_loop().run_in_executor(thread, call)
    except asyncio.CancelledError:
        owner.abort()
        raise


def _flat(arrays: ArrayRecord) -> np.ndarray:
    return np.concatenate([to_ndarray(a).ravel().astype(np.float64) for a in arrays.values()])


def metric(metrics: Any, word: str, default: float) -> float:
    """The first finite metric whose name mentions ``word`` (ClientApps name them freely)."""
    for key, value in (metrics or {}).items():
        if (
            word in key
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            return float(value)
    return default


def _untrained(
    group: GroupMember, grid: GroupGrid, runner: ClientRunner, idle: int, pause: float
) -> float:
    """Say why no member trained (once, then every 10th time) and how long to wait: longer
    each time in a row, up to 10 s, so a group whose apps all fail does not spin."""
    if idle == 1 or idle % 10 == 0:
        errors = [f"{key.hex()[:8]}: {why}" for key, (_, why) in grid.app_errors.items()]
        if runner.failures.streak:
            errors.append(f"this node: {runner.failures.last}")
        log.warning(
            "group %s: no member trained this round (%d in a row)%s",
            group.group_id,
            idle,
            "; ClientApp errors: " + "; ".join(errors) if errors else "",
        )
    doubling: int = 2 ** min(idle - 1, 5)  # int ** int is typed Any (may be float)
    return min(max(pause, 0.5) * doubling, 10.0)


async def lead_rounds(
    group: GroupMember,
    runner: ClientRunner,
    strategy: Strategy,
    *,
    initial: Callable[[], ArrayRecord],
    train_config: dict[str, Any],
    on_round: Callable[[RoundReport], None],
    round_pause: float = 0.0,
    reply_timeout: float = 120.0,
    max_rounds: int | None = None,
    on_updates: Callable[[dict[bytes, np.ndarray], ModelSnapshot], None] | None = None,
    gate: asyncio.Event | None = None,
    screening: Screening | None = None,
) -> None:
    """Run rounds while this node leads the term it led when called.

    ``on_updates`` gets each member's update of the round (its trained weights minus the model
    it was sent, flattened) and the committed model: the hook for splitting a group.
    Each round waits for ``gate`` to be set (training can be paused). Members' replies are
    held to ``screening`` (default ``Screening()``) before the strategy sees them.
    """
    term = group.term
    keep_flower_quiet()  # the strategy's chatter is ours to log, at DEBUG
    # what we ask of members is what we would do ourselves: within our own caps
    train_config = bound_train_config(train_config, runner.caps)
    thread = ThreadPoolExecutor(1, thread_name_prefix="strategy")  # not the shared pool
    try:
        own = functools.partial(runner.run, batch=group.group_id)  # with its members' calls
        loop = asyncio.get_running_loop()
        grid = GroupGrid(group, loop, own, reply_timeout=reply_timeout, screening=screening)
        flower = _FlowerRound(grid, thread, strategy, train_config, reply_timeout)
        done = idle = 0
        while group.is_leader and group.term == term and (max_rounds is None or done < max_rounds):
            if gate is not None:
                await gate.wait()
            base = group.model
            try:
                played = await flower.play(base, initial() if base.empty else arrays_of(base))
                if played is not None:
                    snapshot = snapshot_of(base.round + 1, played.arrays)
                    committed = await group.commit(snapshot)
            except StepDown as exc:
                log.info("group %s: leadership of term %d ended: %s", group.group_id, term, exc)
                return
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:  # one broken round (a strategy or ClientApp bug) is not the end
                log.exception("group %s: round %d failed", group.group_id, base.round + 1)
                await asyncio.sleep(max(round_pause, 1.0))
                continue
            if played is None:  # no member trained
                idle += 1
                await asyncio.sleep(_untrained(group, grid, runner, idle, round_pause))
                continue
            idle = 0
            if not committed:
                log.warning(
                    "group %s: round %d not acknowledged by a majority",
                    group.group_id,
                    snapshot.round,
                )
                await asyncio.sleep(max(round_pause, 0.5))
                continue
            done += 1
            if on_updates is not None and grid.trained:
                start = _flat(played.sent)
                on_updates({k: _flat(a) - start for k, a in grid.trained.items()}, snapshot)
            on_round(played.report(snapshot, term, len(group.roster)))
            await asyncio.sleep(round_pause)
    finally:
        thread.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Played:
    """A round Flower's strategy ran: the model it sent, the one it made, its metrics."""

    sent: ArrayRecord
    arrays: ArrayRecord
    metrics: Any
    started: float

    def report(self, snapshot: ModelSnapshot, term: int, members: int) -> RoundReport:
        return RoundReport(
            round=snapshot.round,
            term=term,
            accuracy=metric(self.metrics, "acc", 0.0),
            loss=metric(self.metrics, "loss", 0.0),
            members=members,
            seconds=loop_time() - self.started,
            digest=snapshot.digest.hex(),
        )


@dataclass
class _FlowerRound:
    """Runs one group round as one Flower run of one server round, on the group's grid."""

    grid: GroupGrid
    thread: ThreadPoolExecutor
    strategy: Strategy
    train_config: dict[str, Any]
    reply_timeout: float

    async def play(self, base: ModelSnapshot, arrays: ArrayRecord) -> _Played | None:
        """The round after ``base``, from ``arrays``; None when no member trained."""
        started = loop_time()
        self.grid.trained.clear()
        self.grid.new_round()
        result = await _in_thread(
            self.grid,
            self.thread,
            self.strategy.start,
            grid=self.grid,
            initial_arrays=arrays,
            num_rounds=1,
            timeout=self.reply_timeout,
            # each Flower run is one round (its server-round is always 1): the group
            # round tells members which round this is (fresh shuffles every round)
            train_config=ConfigRecord({**self.train_config, "group-round": base.round + 1}),
            evaluate_config=ConfigRecord({}),
        )
        if len(result.arrays) == 0:
            return None
        return _Played(arrays, result.arrays, result.evaluate_metrics_clientapp.get(1), started)
