"""ClientApps in a worker process (``ClientProcess``): same results as in a thread, errors as
Error replies, a dead worker replaced, and no worker outliving its parent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode

from mycelium_p2p.fl import task
from mycelium_p2p.fl.client import ClientRunner
from mycelium_p2p.fl.messages import leader_message
from mycelium_p2p.fl.worker import ClientProcess
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.procs import REPO, pid_alive

USER_APP = "tests.helpers.worker_app:app"


def message(runner: ClientRunner, kind: str, arrays: ArrayRecord, **config: object) -> Message:
    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 3, **config})})
    return leader_message(runner.node_id, kind, content, message_id=f"m-{kind}")


def user_runner(worker: ClientProcess) -> ClientRunner:
    from tests.helpers import worker_app

    key = Identity.generate().public_key
    return ClientRunner(worker_app.app, key, {}, executor=worker, app_spec=USER_APP)


@run_async(timeout=120)
async def test_the_worker_trains_exactly_like_a_thread() -> None:
    """The digits task through the worker and in a thread: the same weights, bit for bit."""
    import torch

    worker = ClientProcess(torch_threads=torch.get_num_threads())  # the same float sums
    key = Identity.generate().public_key
    config = {"data-shard": "1/4", "domain": 1, "shift": "rotate", "seed": 5}
    app = task.make_client_app()
    in_thread = ClientRunner(app, key, config)
    in_worker = ClientRunner(app, key, config, executor=worker)
    start = task.initial_arrays()
    try:
        replies = [await r.run(message(r, "train", start)) for r in (in_thread, in_worker)]
        for reply in replies:
            assert not reply.has_error(), reply.error
        ours, theirs = (r.content["arrays"].to_numpy_ndarrays() for r in replies)
        assert len(ours) == len(theirs) == len(start)
        assert any(
            not np.array_equal(a, b) for a, b in zip(ours, start.to_numpy_ndarrays(), strict=True)
        )
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
        m1, m2 = (r.content["metrics"] for r in replies)
        assert m1["train_loss"] == m2["train_loss"] and m1["num-examples"] == m2["num-examples"]
        evaluated = await in_worker.run(
            message(in_worker, "evaluate", replies[1].content["arrays"])
        )
        assert 0.0 <= evaluated.content["metrics"]["eval_acc"] <= 1.0
        assert worker.pid is not None and worker.pid != os.getpid() and worker.starts == 1
    finally:
        in_thread.close()
        in_worker.close()
        pid = worker.pid
        await worker.close()
    assert pid is not None and worker.pid is None
    await wait_for(lambda: not pid_alive(pid), 5, "the worker to exit")


@run_async(timeout=120)
async def test_each_node_keeps_its_own_context_and_errors_are_replies() -> None:
    worker = ClientProcess()
    a, b = user_runner(worker), user_runner(worker)
    arrays = ArrayRecord(numpy_ndarrays=[np.arange(4.0)])
    try:
        # pipelined: four calls in flight at once, answered to the right callers
        replies = await asyncio.gather(*(r.run(message(r, "train", arrays)) for r in (a, a, b, a)))
        calls = sorted(int(r.content["metrics"]["calls"]) for r in replies)
        assert calls == [1, 1, 2, 3]  # node a's context counted 3, node b's 1
        assert {r.content["metrics"]["node"] for r in replies} == {
            a.node_id % 1000,
            b.node_id % 1000,
        }
        np.testing.assert_array_equal(
            replies[0].content["arrays"].to_numpy_ndarrays()[0], np.arange(4.0)
        )
        failed = await a.run(message(a, "evaluate", arrays, **{"raise": True}))
        assert failed.has_error() and failed.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        assert "asked to fail" in (failed.error.reason or "")
        again = await a.run(message(a, "train", arrays))  # the worker survived its app's error
        assert int(again.content["metrics"]["calls"]) == 4 and worker.starts == 1
    finally:
        await worker.close()


@run_async(timeout=120)
async def test_big_models_in_flight_both_ways_do_not_jam_the_pipes() -> None:
    """Several 8 MB models at once: requests and replies far over a pipe's 64 KiB buffer."""
    worker = ClientProcess()
    runners = [user_runner(worker) for _ in range(4)]
    big = np.random.default_rng(1).normal(size=1 << 20)  # 8 MB of float64
    try:
        replies = await asyncio.wait_for(
            asyncio.gather(
                *(r.run(message(r, "train", ArrayRecord(numpy_ndarrays=[big]))) for r in runners)
            ),
            60,
        )
        for reply in replies:
            np.testing.assert_array_equal(reply.content["arrays"].to_numpy_ndarrays()[0], big)
    finally:
        await worker.close()


@run_async(timeout=120)
async def test_queued_calls_go_to_the_worker_batch_by_batch() -> None:
    """While the worker is busy, calls of groups B, A, B, A queue up: B's go first, together
    (B's oldest call is the oldest), then A's, rather than alternating."""
    worker = ClientProcess()
    arrays = ArrayRecord(numpy_ndarrays=[np.zeros(2)])
    busy = [user_runner(worker) for _ in range(2)]
    queued = {name: user_runner(worker) for name in ("b1", "a1", "b2", "a2")}
    try:
        await busy[0].run(message(busy[0], "train", arrays))  # the worker is up
        sleeping = [
            asyncio.create_task(r.run(message(r, "evaluate", arrays, sleep=1.0), batch="x"))
            for r in busy
        ]
        await asyncio.sleep(0.2)  # both written: the worker runs one, the other waits in it
        calls = {}
        for name, runner in queued.items():
            calls[name] = asyncio.create_task(
                runner.run(message(runner, "train", arrays), batch=name[0])
            )
            await asyncio.sleep(0.01)
        await asyncio.gather(*sleeping)
        served = {
            name: int((await task).content["metrics"]["served"]) for name, task in calls.items()
        }
        assert sorted(served, key=served.get) == ["b1", "b2", "a1", "a2"]
    finally:
        await worker.close()


@run_async(timeout=120)
async def test_a_killed_worker_fails_its_call_and_the_next_call_starts_a_new_one() -> None:
    worker = ClientProcess()
    runner = user_runner(worker)
    arrays = ArrayRecord(numpy_ndarrays=[np.zeros(2)])
    try:
        first = await runner.run(message(runner, "train", arrays))
        pid = int(first.content["metrics"]["pid"])
        assert pid == worker.pid
        slow = asyncio.create_task(runner.run(message(runner, "evaluate", arrays, sleep=30.0)))
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        reply = await asyncio.wait_for(slow, 10)
        assert reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE
        fresh = await runner.run(message(runner, "train", arrays))
        assert not fresh.has_error(), fresh.error
        assert int(fresh.content["metrics"]["pid"]) != pid and worker.starts == 2
        assert int(fresh.content["metrics"]["calls"]) == 1  # a new worker: a new context
        runner.close()
        closed = await runner.run(message(runner, "train", arrays))
        assert closed.has_error() and "stopping" in (closed.error.reason or "")
    finally:
        await worker.close()


PARENT = """
import asyncio, sys
import numpy as np
from flwr.app import ArrayRecord
from mycelium_p2p.fl.worker import ClientProcess
from tests.fl.test_worker import message, user_runner

async def main():
    worker = ClientProcess()
    runner = user_runner(worker)
    arrays = ArrayRecord(numpy_ndarrays=[np.zeros(2)])
    await runner.run(message(runner, "train", arrays))
    print(worker.pid, flush=True)
    await runner.run(message(runner, "evaluate", arrays, sleep=2.0))

asyncio.run(main())
"""


def test_a_worker_does_not_outlive_a_sigkilled_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        time.sleep(0.3)  # the worker is inside the slow call
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while pid_alive(worker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        # it was reparented; gone means exited (and reaped by init) after its call
        assert not pid_alive(worker_pid), "the worker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
