"""Flower Apps (``join --app``): loading, config, and groups whose leader runs the ServerApp."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message

from mycelium_p2p.errors import ConfigError
from mycelium_p2p.fl.app import app_task, load_flower_app
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import crash, learning_network

APPS = Path(__file__).resolve().parents[1] / "apps"
NUMPY_APP = APPS / "numpy_app"
TORCH_APP = APPS / "torch_app"


def app_node(app: Path, i: int, n: int, run_config: str = "") -> dict[str, Any]:
    return {
        "app": str(app),
        "app_node_config": f"partition-id={i} num-partitions={n}",
        "run_config": run_config or None,
    }


def leaders(nodes: list[Any]) -> list[Any]:
    return [n for n in nodes if n.group is not None and n.group.is_leader]


# -- loading -----------------------------------------------------------------------------------


def test_app_config_is_parsed_and_overridden_with_flowers_syntax() -> None:
    app = load_flower_app(
        NUMPY_APP, "num-server-rounds=7 lr=0.25", "partition-id=1 num-partitions=4"
    )
    assert app.fab_id == "mycelium/numpyapp" and app.version == "1.0.0"
    assert app.run_config == {
        "num-server-rounds": 7,
        "fraction-train": 1.0,
        "local-epochs": 2,
        "lr": 0.25,
    }
    assert app.node_config == {"partition-id": 1, "num-partitions": 4}
    assert [a.shape for a in app.initial.values()] == [(64, 10), (10,)]  # the ServerApp's


def test_an_undeclared_run_config_key_is_refused_naming_the_declared_ones() -> None:
    with pytest.raises(ConfigError, match=r"'num-rounds'.*num-server-rounds"):
        load_flower_app(NUMPY_APP, "num-rounds=3")


def test_a_malformed_config_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--node-config"):
        load_flower_app(NUMPY_APP, None, "partition-id=[unclosed")


def test_a_directory_without_pyproject_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no pyproject\.toml"):
        load_flower_app(tmp_path)


def _copy_app(tmp_path: Path, old: str, new: str) -> Path:
    app = tmp_path / "app"
    shutil.copytree(NUMPY_APP, app)
    toml = app / "pyproject.toml"
    toml.write_text(toml.read_text().replace(old, new))
    return app


def test_a_missing_component_is_a_config_error(tmp_path: Path) -> None:
    app = _copy_app(tmp_path, 'clientapp = "numpyapp.client_app:app"', 'clientapp = "x:y"')
    with pytest.raises(ConfigError, match="cannot import component 'x:y'"):
        load_flower_app(app)
    app2 = _copy_app(tmp_path / "2", '"numpyapp.client_app:app"', '"numpyapp.client_app:nope"')
    with pytest.raises(ConfigError, match="nope"):
        load_flower_app(app2)
    app3 = _copy_app(tmp_path / "3", '"numpyapp.client_app:app"', '"numpyapp.server_app:app"')
    with pytest.raises(ConfigError, match="not a ClientApp"):
        load_flower_app(app3)


def test_a_pyproject_without_components_is_a_config_error(tmp_path: Path) -> None:
    app = _copy_app(tmp_path, "[tool.flwr.app.components]", "[tool.flwr.app.other]")
    with pytest.raises(ConfigError, match="components"):
        load_flower_app(app)


def test_the_task_comes_from_the_app_and_its_model() -> None:
    numpy_app = load_flower_app(NUMPY_APP)
    torch_app = load_flower_app(TORCH_APP)
    assert numpy_app.task.startswith("numpyapp@1.0.0-")
    assert torch_app.task.startswith("torchapp@1.0.0-")
    other = ArrayRecord([np.zeros((64, 5)), np.zeros(5)])
    assert app_task(numpy_app.fab_id, "1.0.0", other) != numpy_app.task  # other shapes
    assert app_task(numpy_app.fab_id, "1.0.1", numpy_app.initial) != numpy_app.task
    assert len(app_task("p/" + "n" * 200, "9" * 50, numpy_app.initial)) <= 64


def test_a_numpy_app_loads_without_torch() -> None:
    code = (
        "import sys; from mycelium_p2p.fl.app import load_flower_app; "
        f"load_flower_app({str(NUMPY_APP)!r}); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


# -- groups running an app -----------------------------------------------------------------------


def _record_train_arrays(node: Any, seen: list[list[np.ndarray]]) -> None:
    """Wrap the node's ClientApp to see the model each train message carries."""
    app = node.runner.app

    def recording(message: Message, context: Context) -> Message:
        if message.metadata.message_type.startswith("train"):
            seen.append(message.content["arrays"].to_numpy_ndarrays())
        return app(message, context)

    node.runner.app = recording


@run_async(timeout=150)
async def test_two_nodes_run_the_numpy_app_past_num_server_rounds() -> None:
    configs = [app_node(NUMPY_APP, i, 2, "num-server-rounds=2") for i in range(2)]
    async with learning_network(configs) as (_, *nodes):
        from numpyapp import server_app  # the app's own module, as the nodes imported it

        assert len({n.group.group_id for n in nodes}) == 1
        assert nodes[0].group.info.task == nodes[0].flower_app.task
        evaluated = len(server_app.EVALUATIONS)
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 5, 90, "5 rounds (3 runs of 2)")
        rounds = [r.round for r in leader.rounds]
        assert rounds == list(range(rounds[0], rounds[0] + len(rounds)))  # none skipped
        assert leader.rounds[-1].members == 2
        assert leader.rounds[-1].accuracy > 0.5  # the ClientApps' evaluation, chance is 0.1
        # the ServerApp's strategy ran: its evaluate_fn saw server rounds 0, 1, 2, 0, 1, 2, ...
        central = [r for r, _ in server_app.EVALUATIONS[evaluated:]]
        assert set(central) <= {0, 1, 2}
        assert central[central.index(0) :][:4] == [0, 1, 2, 0]  # a run, then the next
        # round 0 of each run is Flower's look at the app's initial arrays (before any
        # message); every later round evaluates a committed group model
        assert [a for r, a in server_app.EVALUATIONS if r > 0][-1] > 0.5


@run_async(timeout=150)
async def test_two_nodes_run_the_torch_app() -> None:
    configs = [app_node(TORCH_APP, i, 2) for i in range(2)]
    async with learning_network(configs) as (_, *nodes):
        from torchapp import server_app

        assert len({n.group.group_id for n in nodes}) == 1
        evaluated = len(server_app.EVALUATIONS)
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 2, 90, "2 rounds")
        assert len(server_app.EVALUATIONS) > evaluated
        assert all(n.group.model.round >= 1 for n in nodes)


@run_async(timeout=150)
async def test_failover_mid_run_resumes_from_the_group_model() -> None:
    # 5 rounds per run: the leader is crashed in the middle of its ServerApp's run
    configs = [app_node(NUMPY_APP, i, 3, "num-server-rounds=5") for i in range(3)]
    async with learning_network(configs) as (_, *nodes):
        (old,) = leaders(nodes)
        await wait_for(lambda: len(old.rounds) >= 2, 60, "2 rounds")
        survivors = [n for n in nodes if n is not old]
        seen: list[list[np.ndarray]] = []
        for node in survivors:
            _record_train_arrays(node, seen)
        await crash(old)
        last = max(n.group.model.round for n in survivors)
        await wait_for(lambda: len(leaders(survivors)) == 1, 30, "a new leader")
        (new,) = leaders(survivors)
        await wait_for(lambda: len(new.rounds) >= 2, 60, "2 rounds under the new leader")
        assert new.rounds[0].round in (last, last + 1)  # continues: no reset, no gap
        assert new.rounds[0].round >= 3
        # no member was sent the app's initial (all-zero) model again
        assert seen and all(np.abs(arrays[0]).sum() > 0 for arrays in seen)


@run_async(timeout=150)
async def test_nodes_of_different_apps_form_different_groups() -> None:
    configs = [app_node(NUMPY_APP, 0, 1), app_node(TORCH_APP, 0, 1), app_node(NUMPY_APP, 0, 1)]
    async with learning_network(configs) as (_, numpy_a, torch_node, numpy_b):
        assert numpy_a.group.group_id == numpy_b.group.group_id
        assert torch_node.group.group_id != numpy_a.group.group_id
        assert torch_node.group.info.task != numpy_a.group.info.task
        await wait_for(lambda: numpy_a.group.model.round >= 1, 60, "a numpy round")


@run_async(timeout=120)
async def test_a_paused_group_pauses_its_serverapp_run() -> None:
    configs = [app_node(NUMPY_APP, i, 2, "num-server-rounds=50") for i in range(2)]
    async with learning_network(configs) as (_, *nodes):
        (leader,) = leaders(nodes)
        await wait_for(lambda: len(leader.rounds) >= 1, 60, "a round")
        leader.training.clear()
        await asyncio.sleep(1.0)  # a round in flight may still commit
        paused_at = len(leader.rounds)
        await asyncio.sleep(1.5)
        assert len(leader.rounds) == paused_at  # mid-run, yet no round
        leader.training.set()
        await wait_for(lambda: len(leader.rounds) > paused_at, 30, "rounds again")
