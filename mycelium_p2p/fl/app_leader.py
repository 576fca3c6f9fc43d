"""The leader of a group running a Flower App: the app's ServerApp, with the group as its Grid.

A ServerApp's ``main(grid, context)`` builds its strategy and calls ``strategy.start`` once for
``num-server-rounds`` rounds. Each Flower round is one **group round**; ``AppGrid`` sees the
round boundaries in the messages themselves, so any strategy works unchanged:

- a ``train`` batch carries the group's latest committed model (the arrays in the strategy's
  messages are replaced by it, which is how a new leader resumes a group's model rather than
  the app's initial one; for every later round of a run they are the same arrays anyway);
- the batch after a ``train`` batch that some member answered carries the strategy's aggregate
  (``configure_evaluate`` sends it for evaluation, or the next ``configure_train`` for
  training): the grid commits it as the group's next round before sending it on, then reports
  the round with the evaluation replies' metrics.

So only committed models are ever trained on or evaluated. The aggregate of a run's last round
is committed when its evaluation goes out; a strategy that evaluates nothing
(``fraction_evaluate=0``) sends no message after its last aggregate, which is then lost.

When the ServerApp returns (``num-server-rounds`` done) the leader runs it again, from the
latest group model: a group trains for as long as it lives, in runs of ``num-server-rounds``
group rounds; Flower's ``server-round`` restarts at 1 with each run, the group round does not.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from flwr.app import ArrayRecord, Context, Message, RecordDict

from ..aio import loop_time
from ..errors import NotCommitted, StepDown
from ..group.member import GroupMember
from .app import FlowerApp
from .client import ClientRunner
from .flower_log import keep_flower_quiet
from .grid import GroupGrid
from .leader import RoundReport, _in_thread, _untrained, arrays_of, metric, snapshot_of
from .limits import Screening

log = logging.getLogger(__name__)


class AppGrid(GroupGrid):
    """A ``GroupGrid`` that commits each Flower round of a ServerApp as a group round."""

    def __init__(
        self,
        *args: Any,
        on_round: Callable[[RoundReport], None],
        round_pause: float = 0.0,
        gate: asyncio.Event | None = None,
        **kwargs: Any,
    ) -> None:
        """``on_round`` hears of each committed round (on the loop); each round after the
        first waits ``round_pause`` seconds, and for ``gate`` to be set."""
        super().__init__(*args, **kwargs)
        self.on_round = on_round
        self.round_pause = round_pause
        self.gate = gate
        self.commits = 0  # rounds committed by this grid
        self._trained_ok = False  # the last train batch had a reply: its aggregate is due
        self._started = loop_time()

    def get_node_ids(self) -> Iterable[int]:
        """The members now (a strategy waiting for ``min_available_nodes`` sees them join)."""
        self.new_round()
        return super().get_node_ids()

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        arrays = _arrays_in(messages)
        committed = None
        if arrays is not None and self._trained_ok:
            committed = self._on_loop(self._commit(arrays[1]))
            self._trained_ok = False
        if messages and messages[0].metadata.message_type.startswith("train"):
            if arrays is not None:
                base = self._on_loop(self._group_arrays())
                if base is not None:
                    for message in messages:  # shared or not, each carries the group model
                        message.content[arrays[0]] = base
            if self.commits and self.round_pause > 0:
                time.sleep(self.round_pause)  # between rounds, as for a bare ClientApp
            if self.gate is not None:
                self._on_loop(self.gate.wait())  # training paused: the run waits
            self.trained.clear()
            self._started = loop_time()
            replies = list(super().send_and_receive(messages, timeout=timeout))
            self._trained_ok = bool(self.trained)
        else:
            replies = list(super().send_and_receive(messages, timeout=timeout))
        if committed is not None:
            self._report(committed, replies)
        return replies

    async def _group_arrays(self) -> ArrayRecord | None:
        model = self.group.model
        return None if model.empty else arrays_of(model)

    async def _commit(self, arrays: ArrayRecord) -> tuple[int, str]:
        if not self.group.is_leader or self.group.term != self.term:
            raise StepDown("no longer the leader of this term")
        snapshot = snapshot_of(self.group.model.round + 1, arrays)
        if not await self.group.commit(snapshot):
            raise NotCommitted(f"round {snapshot.round} not acknowledged by a majority")
        self.commits += 1
        return snapshot.round, snapshot.digest.hex()

    def _report(self, committed: tuple[int, str], replies: list[Message]) -> None:
        metrics: dict[str, float] = {}
        weights = 0.0
        for reply in replies:
            if not reply.has_content() or not reply.metadata.message_type.startswith("evaluate"):
                continue
            for record in reply.content.metric_records.values():
                # check_reply lets a reply through only with a positive number here
                n = float(cast(float, record.get("num-examples", 1)) or 1)
                weights += n
                for key, value in record.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        metrics[key] = metrics.get(key, 0.0) + n * float(value)
                break
        averaged = {k: v / weights for k, v in metrics.items()} if weights else {}
        report = RoundReport(
            round=committed[0],
            term=self.term,
            accuracy=metric(averaged, "acc", 0.0),
            loss=metric(averaged, "loss", 0.0),
            members=len(self.group.roster),
            seconds=loop_time() - self._started,
            digest=committed[1],
        )
        self.loop.call_soon_threadsafe(self.on_round, report)


def _arrays_in(messages: list[Message]) -> tuple[str, ArrayRecord] | None:
    """The (name, arrays) a batch carries: the model the strategy sends out."""
    for message in messages:
        for name, record in message.content.array_records.items():
            return name, record
    return None


async def lead_app(
    group: GroupMember,
    runner: ClientRunner,
    app: FlowerApp,
    *,
    on_round: Callable[[RoundReport], None],
    round_pause: float = 0.0,
    reply_timeout: float = 120.0,
    gate: asyncio.Event | None = None,
    screening: Screening | None = None,
    max_runs: int | None = None,
) -> None:
    """Run the app's ServerApp again and again while this node leads the term it led when
    called (each run from the latest group model). ``max_runs`` bounds the runs (tests)."""
    term = group.term
    keep_flower_quiet()  # the ServerApp's chatter is ours to log, at DEBUG
    thread = ThreadPoolExecutor(1, thread_name_prefix="serverapp")
    own = functools.partial(runner.run, batch=group.group_id)
    runs = idle = 0
    try:
        while group.is_leader and group.term == term and (max_runs is None or runs < max_runs):
            if gate is not None:
                await gate.wait()
            grid = AppGrid(
                group,
                asyncio.get_running_loop(),
                own,
                reply_timeout=reply_timeout,
                screening=screening,
                on_round=on_round,
                round_pause=round_pause,
                gate=gate,
            )
            context = Context(
                run_id=0,
                node_id=0,
                node_config={},
                state=RecordDict(),
                run_config=dict(app.run_config),
            )
            runs += 1
            try:
                await _in_thread(grid, thread, app.server_app, grid=grid, context=context)
            except StepDown as exc:
                log.info("group %s: leadership of term %d ended: %s", group.group_id, term, exc)
                return
            except NotCommitted as exc:
                log.warning("group %s: %s", group.group_id, exc)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception:  # a ServerApp or ClientApp bug ends this run, not the group
                log.exception("group %s: the ServerApp's run failed", group.group_id)
            if grid.commits == 0:
                idle += 1
                await asyncio.sleep(_untrained(group, grid, runner, idle, round_pause))
            else:
                idle = 0
                await asyncio.sleep(round_pause)
    finally:
        thread.shutdown(wait=False, cancel_futures=True)
