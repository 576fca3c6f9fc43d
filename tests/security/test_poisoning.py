"""One bad member cannot ruin its group (real nodes on loopback, the product's code path).

Its poisoned reply is dropped by the leader's Grid with a warning naming it, the round commits
from the others; updates screening cannot tell from honest ones (a sign flip) barely move the
default strategy's aggregate; a member trains within its own caps.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from mycelium_p2p.fl import task
from mycelium_p2p.fl.grid import GroupGrid
from mycelium_p2p.fl.leader import arrays_of
from mycelium_p2p.fl.messages import flower_node_id, leader_message
from mycelium_p2p.fl.npy import from_ndarray, to_ndarray
from mycelium_p2p.fl.strategies import make_strategy
from mycelium_p2p.fl.wire import decode_content, encode_content
from mycelium_p2p.group.transport import Reply
from mycelium_p2p.node.config import NodeConfig
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network

Change = Callable[[ArrayRecord, RecordDict], None]


def tampering(honest: ClientApp, change: Change) -> ClientApp:
    """Trains as ``honest`` does, then ``change(sent arrays, reply content)`` in place."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = honest(msg, context)
        change(msg.content["arrays"], reply.content)
        return Message(reply.content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return honest(msg, context)

    return app


def arrays(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Change:
    """A change of the reply's weights: ``fn(sent, trained)`` per array."""

    def change(sent: ArrayRecord, content: RecordDict) -> None:
        trained = content["arrays"]
        for key in list(trained.keys()):
            base = to_ndarray(sent[key])
            trained[key] = from_ndarray(fn(base, to_ndarray(trained[key])).astype(base.dtype))

    return change


def metric(name: str, value: float) -> Change:
    def change(sent: ArrayRecord, content: RecordDict) -> None:
        content["metrics"][name] = value

    return change


def to_float64(sent: ArrayRecord, content: RecordDict) -> None:
    trained = content["arrays"]
    for key in list(trained.keys()):
        trained[key] = from_ndarray(to_ndarray(trained[key]).astype(np.float64))


BAD_REPLIES: list[tuple[str, Change, str]] = [
    ("NaN weights", arrays(lambda s, w: np.full_like(w, np.nan)), "NaN or infinite"),
    ("inf weight", arrays(lambda s, w: np.where(w > 0, np.inf, w)), "NaN or infinite"),
    ("update x100", arrays(lambda s, w: s + 100 * (w - s)), "median"),
    ("float64 weights", to_float64, "dtypes"),
    ("1e300 examples", metric("num-examples", 1e300), "over the cap"),
    ("inf examples", metric("num-examples", math.inf), "not finite"),
    ("NaN examples", metric("num-examples", math.nan), "not finite"),
    ("0 examples", metric("num-examples", 0), "positive"),
    ("negative examples", metric("num-examples", -50), "positive"),
    ("NaN loss", metric("train_loss", math.nan), "not finite"),
]


def flat(record: ArrayRecord) -> np.ndarray:
    return np.concatenate([to_ndarray(a).ravel().astype(np.float64) for a in record.values()])


def leader_of(nodes: list[Any]) -> Any:
    (leader,) = [n for n in nodes if n.group is not None and n.group.is_leader]
    return leader


@run_async(timeout=240)
async def test_each_bad_reply_is_dropped_naming_the_member_and_rounds_commit(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="mycelium_p2p.fl")
    configs = [{"create": "p", "data_shard": "0/4"}] + [{"data_shard": f"{i}/4"} for i in (1, 2, 3)]
    async with learning_network(configs) as (_, *nodes):
        leader = leader_of(nodes)
        await wait_for(lambda: len(leader.group.roster) == 4, 60, "4 members")
        await wait_for(lambda: len(leader.rounds) >= 1, 60, "a first round")
        bad = next(n for n in nodes if n is not leader)
        name = bad.identity.public_key.hex()[:8]
        honest = bad.runner.app
        for kind, change, why in BAD_REPLIES:
            caplog.clear()
            bad.runner.app = tampering(honest, change)
            done = len(leader.rounds)
            # the first round may have been under way when the attacker turned; the second not
            await wait_for(lambda done=done: len(leader.rounds) >= done + 2, 60, f"{kind} rounds")
            drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
            assert any(name in m and why in m for m in drops), (kind, drops)
            assert all(name in m for m in drops), (kind, drops)  # nobody else's reply went
            committed = flat(arrays_of(leader.group.model))
            assert np.isfinite(committed).all() and np.abs(committed).max() < 100, kind
        bad.runner.app = honest


async def one_round(leader: Any, strategy: str, initial: ArrayRecord, screen: bool) -> np.ndarray:
    grid = GroupGrid(leader.group, asyncio.get_running_loop(), leader.runner.run, screen=screen)
    chosen = make_strategy(strategy)
    chosen.fraction_evaluate = 0.0
    result = await asyncio.to_thread(
        chosen.start,
        grid=grid,
        initial_arrays=initial,
        num_rounds=1,
        timeout=30.0,
        train_config=ConfigRecord({"lr": 0.05, "local-epochs": 1}),
        evaluate_config=ConfigRecord({}),
    )
    # FedMedian pops the arrays out of the replies it aggregates: the leader's copy stays whole
    assert grid.trained and all(len(a) == len(initial) for a in grid.trained.values())
    return flat(result.arrays)


@run_async(timeout=240)
async def test_the_default_strategy_keeps_the_model_close_to_the_clean_aggregate() -> None:
    """With 1 of 5 members sign-flipping or scaling its update x100, the default strategy's
    aggregate stays near the clean one, with or without screening (screening drops the x100;
    the sign flip it cannot see); plain FedAvg is pulled much further by the same sign flip."""
    configs = [{"create": "p", "data_shard": "0/5"}] + [
        {"data_shard": f"{i}/5"} for i in range(1, 5)
    ]
    async with learning_network(configs) as (_, *nodes):
        leader = leader_of(nodes)
        await wait_for(lambda: len(leader.group.roster) == 5, 60, "5 members")
        await wait_for(lambda: len(leader.rounds) >= 3, 60, "3 rounds")
        for node in nodes:
            node.training.clear()  # the next rounds are ours
        # a model some rounds in: the first updates, from random weights, are all alike
        start = arrays_of(leader.group.model)
        w0 = flat(start)
        default = NodeConfig().fl.strategy
        clean = await one_round(leader, default, start, screen=True)
        step = np.linalg.norm(clean - w0)
        assert step > 0
        bad = next(n for n in nodes if n is not leader)
        honest = bad.runner.app
        deviations = {}
        for kind, fn in [
            ("signflip", lambda s, w: s - (w - s)),
            ("x100", lambda s, w: s + 100 * (w - s)),
        ]:
            bad.runner.app = tampering(honest, arrays(fn))
            for screen in (True, False):
                got = await one_round(leader, default, start, screen=screen)
                deviations[kind, screen] = np.linalg.norm(got - clean) / step
            deviations[kind, "fedavg"] = (
                np.linalg.norm(await one_round(leader, "fedavg", start, True) - clean) / step
            )
        bad.runner.app = honest
        for kind in ("signflip", "x100"):
            for screen in (True, False):
                assert deviations[kind, screen] < 0.25, deviations
        # the same sign flip moves plain FedAvg (screened: the flip has an honest norm) further
        assert deviations["signflip", "fedavg"] > deviations["signflip", True], deviations


@run_async(timeout=120)
async def test_a_member_trains_within_its_own_caps() -> None:
    async with learning_network([{"create": "p", "round_pause": 30}, {}]) as (_, leader, member):
        seen: list[dict[str, Any]] = []
        honest = member.runner.app

        def recording(msg: Message, context: Context) -> Message:
            config = dict(msg.content["config"])
            if config.pop("probe", None):  # ours, not a round of the leader's own loop
                seen.append(config)
            return honest(msg, context)

        member.runner.app = recording
        grid = GroupGrid(leader.group, asyncio.get_running_loop(), leader.runner.run)
        grid.get_node_ids()
        dst = flower_node_id(member.identity.public_key)

        async def train(config: dict[str, Any]) -> Message:
            config = ConfigRecord({**config, "probe": 1})
            content = RecordDict({"arrays": task.initial_arrays(), "config": config})
            message = leader_message(dst, "train", content)
            (reply,) = await asyncio.to_thread(grid.send_and_receive, [message], timeout=30)
            return reply

        reply = await train({"local-epochs": 10_000, "lr": 50.0, "batch-size": 32})
        assert not reply.has_error(), reply.error
        caps = member.runner.caps
        assert seen == [
            {
                "local-epochs": caps.max_local_epochs,
                "lr": caps.max_learning_rate,
                "batch-size": 32,
            }
        ]
        for config in ({"lr": math.nan}, {"local-epochs": 0}, {"batch-size": -1}, {"lr": math.inf}):
            reply = await train(config)
            assert reply.has_error() and "not finite" in (reply.error.reason or ""), config
        assert len(seen) == 1  # refused before the ClientApp ran


@run_async(timeout=120)
async def test_a_string_num_examples_on_the_wire_is_refused(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="mycelium_p2p.fl")
    async with learning_network([{"create": "p", "round_pause": 30}, {}]) as (_, leader, member):
        original = member.runner.handle

        async def handle(group: Any, channel: Any, header: Any, segments: Any) -> Reply:
            reply = await original(group, channel, header, segments)
            content = decode_content(reply.header["records"], list(reply.segments))
            records, segs = encode_content(content)
            for record in records:
                if record[1] == "m":
                    record[2]["num-examples"] = "1000000000"
            return Reply({**reply.header, "records": records}, segs)

        member.runner.handle = handle
        grid = GroupGrid(leader.group, asyncio.get_running_loop(), leader.runner.run)
        grid.get_node_ids()
        dst = flower_node_id(member.identity.public_key)
        content = RecordDict({"arrays": task.initial_arrays(), "config": ConfigRecord({})})
        message = leader_message(dst, "train", content)
        (reply,) = await asyncio.to_thread(grid.send_and_receive, [message], timeout=30)
        assert reply.has_error()
        name = member.identity.public_key.hex()[:8]
        assert any(name in r.getMessage() for r in caplog.records)


@run_async(timeout=120)
async def test_a_group_of_two_trains_with_the_default_strategy() -> None:
    async with learning_network([{"create": "p", "data_shard": "0/2"}, {"data_shard": "1/2"}]) as (
        _,
        *nodes,
    ):
        leader = leader_of(nodes)
        assert leader.config.fl.strategy == NodeConfig().fl.strategy
        await wait_for(lambda: len(leader.group.roster) == 2, 60, "2 members")
        done = len(leader.rounds)
        await wait_for(lambda: len(leader.rounds) >= done + 3, 60, "rounds with both")
        assert leader.rounds[-1].members == 2 and leader.rounds[-1].accuracy > 0.1
