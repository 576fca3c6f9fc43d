"""A node loads only what its ClientApp needs: a numpy-only app never brings torch in (#15)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from mycelium_p2p.fl.messages import ensure_task_identity, leader_message
from mycelium_p2p.testing.procs import REPO, pid_alive, processes, start_join, start_seed
from tests.fl import numpy_app

FAST = ("--heartbeat", "0.5", "--round-pause", "0.2")
HEAVY = ("torch", "sklearn")


def loaded_in_fresh_interpreter(module: str) -> dict[str, bool]:
    """Which of ``HEAVY`` are in ``sys.modules`` after a fresh interpreter imports ``module``."""
    code = f"import sys, {module}; print(*[m in sys.modules for m in {HEAVY!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return dict(zip(HEAVY, [word == "True" for word in out.stdout.split()], strict=True))


@pytest.mark.parametrize(
    "module",
    [
        "mycelium_p2p.node",
        "mycelium_p2p.node.node",
        "mycelium_p2p.cli.main",
        "mycelium_p2p.fl.data",
        "mycelium_p2p.fl.worker",
        "mycelium_p2p.migration.measure",
    ],
)
def test_importing_the_runtime_loads_neither_torch_nor_sklearn(module: str) -> None:
    assert loaded_in_fresh_interpreter(module) == {"torch": False, "sklearn": False}


def test_the_default_task_still_loads_torch() -> None:
    """The check above can fail: the digits task's own module does import torch."""
    assert loaded_in_fresh_interpreter("mycelium_p2p.fl.task")["torch"]


@pytest.mark.parametrize(
    ("before", "expected"),
    [("", "False -1"), ("import torch; torch.set_num_threads(2)", "True 1")],
)
def test_torch_threads_are_set_only_in_a_process_that_loaded_torch(
    before: str, expected: str
) -> None:
    code = (
        f"import sys; {before}\n"
        "from mycelium_p2p.fl.worker import limit_torch_threads\n"
        "limit_torch_threads(1)\n"
        "torch = sys.modules.get('torch')\n"
        "print(torch is not None, torch.get_num_threads() if torch else -1)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_the_default_task_reexports_its_data_side() -> None:
    from mycelium_p2p.fl import data, task

    for name in ("DataError", "Dataset", "load_array_file", "load_digits_task", "parse_shard"):
        assert getattr(task, name) is getattr(data, name)


def test_the_numpy_app_learns() -> None:
    ensure_task_identity()
    context = Context(run_id=0, node_id=7, node_config={}, state=RecordDict(), run_config={})

    def call(kind: str, arrays: object) -> Message:
        content = RecordDict({"arrays": arrays, "config": ConfigRecord({})})
        return numpy_app.app(leader_message(7, kind, content, group_id="g"), context)

    start = numpy_app.initial_arrays()
    trained = call("train", start).content["arrays"]
    before = call("evaluate", start).content["metrics"]["eval_acc"]
    after = call("evaluate", trained).content["metrics"]["eval_acc"]
    assert after > max(before, 0.8)
    assert all(np.isfinite(a).all() for a in trained.to_numpy_ndarrays())


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _maps_torch(pid: int) -> bool:
    """Whether torch's shared library is mapped into ``pid`` (a module is never unloaded)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_numpy_node_leads_rounds_and_migrates_without_torch(
    tmp_path: Path, isolation: str
) -> None:
    """Two real `join` processes with the numpy app each found a group, commit rounds as its
    leader (Flower's FedAvg) and measure each other's model for migration (through the app's
    evaluate): no process of theirs ever loads torch or scikit-learn."""
    app = ("--client-app", "tests.fl.numpy_app:app", "--isolation", isolation, "--threads", "1")
    extra = (*app, *FAST, "--evaluation-interval", "1", "--threshold", "1")
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        nodes = [
            start_join(procs, port, tmp_path / name, "--create", name, *extra)
            for name in ("alpha", "beta")
        ]
        for node in nodes:
            node.expect(r"round 3 \(term 1\)", timeout=90)
            node.expect(r"own data: [0-9.]+ in \w+, best candidate [0-9.]+", timeout=60)
            pids = [node.pid, *_children(node.pid)]
            assert len(pids) == (2 if isolation == "process" else 1), pids
            assert not any(_maps_torch(pid) for pid in pids if pid_alive(pid))
        for node in nodes:
            assert node.stop() == 0
        for node in nodes:
            calls = re.findall(r"numpy-app: (\w+) torch=(\w+) sklearn=(\w+)", node.output())
            assert {kind for kind, _, _ in calls} == {"train", "evaluate"}, node.output()[-2000:]
            assert {(torch, sk) for _, torch, sk in calls} == {("False", "False")}
