"""One candidate group failing in any way (its model will not come or decode, measuring it
raises, joining it raises) costs that candidate only: migration moves to the next and the
loop lives on. A ``Mover`` with fakes for the network and for its node's other parts makes
each failure exact."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from mycelium_p2p.aio import TaskOwner
from mycelium_p2p.group.member import JoinRefused
from mycelium_p2p.group.transport import ChannelError
from mycelium_p2p.migration.policy import MigrationConfig, MigrationPolicy
from mycelium_p2p.node import moving
from mycelium_p2p.node.config import NodeConfig
from mycelium_p2p.records import GroupAdvert, GroupMetrics
from mycelium_p2p.testing.aio import run_async, wait_for


@dataclass
class FakeGroup:
    group_id: str
    model: Any = None
    is_leader: bool = False
    roster: dict[bytes, Any] = field(default_factory=dict)

    @property
    def info(self) -> Any:
        return type("Info", (), {"name": self.group_id})()


def advert(group_id: str) -> GroupAdvert:
    return GroupAdvert(
        group_id=group_id,
        name=group_id,
        task="digits",
        leader=("127.0.0.1", 9000),
        leader_key=bytes(32),
        term=1,
        policy="open",
        metrics=GroupMetrics(0.5, 1.0, 3, 2, 10),
    )


class FakeMembership:
    """What ``Mover`` needs of ``Membership``; joining fails as ``join_errors`` says."""

    def __init__(self, join_errors: dict[str, BaseException]) -> None:
        self.group: Any = FakeGroup("own", model="own")
        self.change = asyncio.Lock()
        self.model_cap: int | None = None
        self.moves: list[tuple[float, str, str]] = []
        self.join_errors = join_errors
        self.origin: Any = None
        self.entered_with: list[Any] = []

    async def leave(self) -> None:
        self.group = None

    def moved(self, old: str, new: str, *, chosen: bool) -> None:
        self.moves.append((0.0, old, new))

    async def join(self, target: GroupAdvert) -> None:
        error = self.join_errors.get(target.group_id)
        if error is not None:
            raise error
        self.group = FakeGroup(target.group_id, model=target.group_id)

    async def enter(self, *, as_configured: bool = True, model: Any = None) -> None:
        self.entered_with.append(model)
        self.group = FakeGroup("founded", model=model)

    def keep_origin(self, origin: Any, old: str) -> None:
        pass


class StandIn:
    """A ``Mover`` on fakes, with the events it emitted."""

    def __init__(self, join_errors: dict[str, BaseException]) -> None:
        self.membership = FakeMembership(join_errors)
        self.events: list[tuple[str, str]] = []
        self.tasks = TaskOwner()
        leading: Any = SimpleNamespace(stop=lambda: None, rounds=[])
        self.mover = moving.Mover(
            NodeConfig.from_flat(group_evaluation_interval=0.01, reply_timeout=1.0),
            self.membership,  # type: ignore[arg-type]
            leading,
            None,  # type: ignore[arg-type]  # the publisher: only a leader alone needs it
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            MigrationPolicy(
                MigrationConfig(
                    performance_threshold=0.05, confirmations=1, cooldown=0.0, max_candidates=10
                )
            ),
            self.emit,
            self.tasks,
            random.Random(0),
        )
        self.evaluate_groups = self.mover.evaluate_groups
        self.start_migration = self.mover.start_migration

    @property
    def group(self) -> Any:
        return self.membership.group

    @property
    def moves(self) -> list[tuple[float, str, str]]:
        return self.membership.moves

    def emit(self, kind: str, text: str, **_fields: Any) -> None:
        self.events.append((kind, text))


# The candidates' measured accuracy on our data; ours is 0.5. "no-model" cannot be fetched,
# "bad-decode" sends a model that does not decode, "bad-measure" raises in our evaluation.
ACCURACY = {"own": 0.5, "join-fails": 0.95, "next-best": 0.9, "founded": 0.5, "worse": 0.52}


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {
        "adverts": ["no-model", "bad-decode", "bad-measure", "join-fails", "next-best", "worse"],
        "fetch_fails": 0,
    }

    async def fetch_adverts(_dht: Any, _task: str) -> list[GroupAdvert]:
        if state["fetch_fails"]:
            state["fetch_fails"] -= 1
            raise ValueError("a DHT reply no parser expected")
        return [advert(g) for g in state["adverts"]]

    async def fetch_model(
        _channels: Any, candidate: GroupAdvert, _timeout: float, _most: int | None = None
    ) -> Any:
        if candidate.group_id == "no-model":
            raise ChannelError("connection refused")
        if candidate.group_id == "bad-decode":
            raise ValueError("cannot reshape array of size 3 into shape (2,3)")
        return candidate.group_id

    async def score(_runner: Any, model: Any) -> float:
        if model == "bad-measure":
            raise RuntimeError("the ClientApp raised on this model")
        return ACCURACY[model]

    monkeypatch.setattr(moving, "fetch_adverts", fetch_adverts)
    monkeypatch.setattr(moving, "fetch_model", fetch_model)
    monkeypatch.setattr(moving, "score", score)
    return state


@pytest.mark.parametrize(
    "join_error",
    [
        ValueError("the leader's join reply holds a model that does not decode"),
        ChannelError("the leader hung up"),
        JoinRefused("full"),
    ],
)
@run_async(timeout=30)
async def test_candidates_that_fail_cost_only_themselves(
    network: dict[str, Any], join_error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    network["adverts"] = [*network["adverts"], "founded"]
    node = StandIn({"join-fails": join_error})
    caplog.set_level(logging.INFO, logger=moving.__name__)
    reason = await node.evaluate_groups()
    assert "serves our data better" in reason
    assert node.group.group_id == "next-best"  # the best one failed; the next one that beats ours
    assert [to for _, _, to in node.moves] == ["next-best"]
    assert ("refused", f"join-fails refused us ({type(join_error).__name__}: {join_error})") in [
        (k, t) for k, t in node.events if k == "refused"
    ]
    logged = caplog.text
    for name in ("no-model", "bad-decode", "bad-measure"):
        assert f"cannot measure {name}'s model" in logged


@run_async(timeout=30)
async def test_when_every_better_candidate_fails_the_node_still_ends_in_a_group(
    network: dict[str, Any],
) -> None:
    node = StandIn({"join-fails": ValueError("bad"), "next-best": ChannelError("gone")})
    await node.evaluate_groups()
    # "worse" does not beat ours by the threshold: not a fallback; back to finding a group
    assert node.group.group_id == "founded" and node.moves == []
    assert node.membership.entered_with == ["own"]  # it brings its model along


@run_async(timeout=30)
async def test_the_migration_loop_lives_through_failures_and_then_moves(
    network: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    network["fetch_fails"] = 3  # three checks in a row fail before any candidate is seen
    node = StandIn({"join-fails": ValueError("bad")})
    with caplog.at_level(logging.ERROR, logger=moving.__name__):
        node.start_migration()
        try:
            await wait_for(lambda: node.moves != [], 20, "a move after the failures")
        finally:
            await node.tasks.close()
    assert node.group.group_id == "next-best"
    assert network["fetch_fails"] == 0
    assert caplog.text.count("migration check failed") == 3


@run_async(timeout=60)
async def test_a_peers_model_that_fails_our_evaluate_is_not_our_app_failing() -> None:
    """Scoring a candidate's model of other shapes raises in our evaluate: it scores nothing,
    and it never counts toward the streak after which a node leaves its group for good."""
    import numpy as np

    from mycelium_p2p.fl.client import ClientRunner
    from mycelium_p2p.fl.leader import snapshot_of
    from mycelium_p2p.fl.task import initial_arrays, make_client_app
    from mycelium_p2p.identity import Identity
    from mycelium_p2p.migration.measure import score

    heard: list[int] = []
    runner = ClientRunner(make_client_app(), Identity.generate().public_key, {"data-shard": "0/4"})
    runner.on_failure = lambda failures: heard.append(failures.streak)
    try:
        from flwr.app import Array, ArrayRecord

        wrong = ArrayRecord({"w": Array(np.zeros((3, 3), np.float32))})  # not the task's shapes
        bad = snapshot_of(1, wrong)
        for _ in range(6):
            assert await score(runner, bad) is None
        assert runner.failures.streak == 0 and heard == []
        assert await score(runner, snapshot_of(1, initial_arrays(64, 10))) is not None
    finally:
        runner.close()
