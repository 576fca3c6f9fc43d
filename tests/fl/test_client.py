"""The member side's ClientApp runner: its own thread, or an executor nodes share."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flwr.app import ConfigRecord, Message, RecordDict

from mycelium_p2p.fl import task
from mycelium_p2p.fl.client import ClientRunner
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network


def evaluate_message(runner: ClientRunner) -> Message:
    from mycelium_p2p.fl.messages import leader_message

    content = RecordDict({"arrays": task.initial_arrays(), "config": ConfigRecord({})})
    return leader_message(runner.node_id, "evaluate", content, message_id="m1")


@run_async()
async def test_a_shared_executor_runs_the_app_and_outlives_a_closed_runner() -> None:
    shared = ThreadPoolExecutor(1)
    calls: list[str] = []
    app = task.make_client_app()

    def counting(message: Message, context: object) -> Message:
        calls.append(message.metadata.message_type)
        return app(message, context)

    try:
        key = Identity.generate().public_key
        runner = ClientRunner(counting, key, {"data-shard": "0/4"}, executor=shared)  # type: ignore[arg-type]
        reply = await runner.run(evaluate_message(runner))
        assert not reply.has_error(), reply.error
        assert 0.0 <= reply.content["metrics"]["eval_acc"] <= 1.0
        runner.close()
        # a call queued in the shared pool after its node stopped does not run the app
        reply = await runner.run(evaluate_message(runner))
        assert reply.has_error() and "stopping" in (reply.error.reason or "")
        assert calls == ["evaluate"]
        assert shared.submit(lambda: 7).result(timeout=5) == 7  # the pool was not shut down
    finally:
        shared.shutdown()


@run_async(timeout=120)
async def test_nodes_sharing_one_compute_thread_train_together() -> None:
    """Three nodes, one thread for all their ClientApps: the leader's strategy waits on
    members whose calls queue behind each other, and rounds still complete."""
    shared = ThreadPoolExecutor(1, thread_name_prefix="compute")
    try:
        configs = [{"create": "one"}, {"group": "one"}, {"group": "one"}]
        async with learning_network(configs, compute=shared) as (_, leader, *members):
            await wait_for(lambda: len(leader.group.roster) == 3, 30, "three members")
            start = len(leader.rounds)
            await wait_for(lambda: len(leader.rounds) >= start + 3, 60, "three rounds")
            assert leader.rounds[-1].members == 3
            assert all(m.group.model.round >= start + 2 for m in members)
    finally:
        shared.shutdown(cancel_futures=True)
