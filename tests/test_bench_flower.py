"""scripts/bench_flower.py: reading Flower's ServerApp log, and stopping every process by PID."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psutil
import pytest

from scripts.bench_flower import flower_figures, per_node_mb
from scripts.proc_fleet import Fleet, wait_log

# lines as `flwr run --stream` prints them (colours stripped), with arrival times
LOG = [
    (10.0, "INFO :      Initial global evaluation results: {'accuracy': 0.09, 'loss': 2.3}"),
    (10.1, "INFO :      [ROUND 1/2]"),
    (30.0, "INFO :      \t└──> Aggregated MetricRecord: {'eval_loss': 2.1, 'eval_acc': 0.82}"),
    (30.1, "INFO :      \t└──> MetricRecord: {'accuracy': 0.81, 'loss': 2.12}"),
    (30.2, "INFO :      [ROUND 2/2]"),
    (50.0, "INFO :      \t└──> Aggregated MetricRecord: {'eval_loss': 1.9, 'eval_acc': 0.83}"),
    (50.1, "INFO :      \t└──> MetricRecord: {'accuracy': 0.835, 'loss': 1.97}"),
    (50.1, "INFO :      Strategy execution finished in 40.10s"),
]


def test_flower_figures_time_rounds_by_the_strategys_clock_and_take_the_last_accuracy() -> None:
    figures = flower_figures(LOG, rounds=2, wall=45.0)
    assert figures["s_per_round"] == pytest.approx(20.05)  # the strategy's own 40.10 s
    assert figures["s_per_round_streamed"] == pytest.approx(20.0)
    assert figures["accuracy"] == pytest.approx(0.83)
    assert figures["central_accuracy"] == pytest.approx(0.835)


def test_flower_figures_refuse_a_log_without_rounds() -> None:
    with pytest.raises(RuntimeError, match="no rounds"):
        flower_figures(LOG[:1], rounds=2, wall=1.0)


def test_a_supernode_is_its_process_its_superexec_and_its_largest_clientapp() -> None:
    rss = {
        "flower-supernode": {"count": 4, "max_mb": 130.0, "sum_mb": 500.0},
        "flower-superexec": {"count": 5, "max_mb": 120.0, "sum_mb": 600.0},
        "flwr-clientapp": {"count": 24, "max_mb": 200.0, "sum_mb": 4000.0},
    }
    assert per_node_mb({"engine": "flower", "rss": rss}) == pytest.approx(450.0)
    mycelium = {"mycelium join": {"count": 4, "max_mb": 300.0, "sum_mb": 1150.0}}
    assert per_node_mb({"engine": "mycelium", "rss": mycelium}) == pytest.approx(300.0)


# a parent that starts a grandchild holding 50 MB, prints, and ignores SIGTERM
PARENT = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import time; b = bytearray(50 * 2**20); time.sleep(60)"])
print("started", child.pid, flush=True)
time.sleep(60)
"""


def test_fleet_samples_the_whole_tree_and_stops_every_process_by_pid(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, {})
    try:
        log = fleet.start("parent", [sys.executable, "-c", PARENT])
        child_pid = int(wait_log(log, r"started (\d+)", time.monotonic() + 20, fleet).group(1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and fleet.peak_kb.get(child_pid, 0) < 50 * 1024:
            time.sleep(0.1)
    finally:
        fleet.stop()
    assert fleet.peak_kb[child_pid] >= 50 * 1024  # the grandchild's 50 MB were seen
    assert fleet.peak_total_kb >= 50 * 1024 + fleet.peak_kb[fleet.roots[0].pid] // 2
    python = fleet.rss_by_kind()[Path(sys.executable).name]
    assert python["count"] == 2
    assert not psutil.pid_exists(child_pid)  # SIGTERMed with its parent
    assert fleet.roots[0].returncode is not None  # the parent ignored SIGTERM: SIGKILLed


def test_a_process_counts_as_what_it_execs_into_not_what_forked_it(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, {})
    try:
        script = "import os, time; time.sleep(1); os.execv('/bin/sleep', ['sleep', '30'])"
        fleet.start("exec", [sys.executable, "-c", script])
        pid = fleet.roots[0].pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and fleet.kinds.get(pid) != "sleep":
            time.sleep(0.1)
    finally:
        fleet.stop()
    assert fleet.rss_by_kind()["sleep"]["max_mb"] < 5  # sleep's own peak, not Python's
    assert Path(sys.executable).name not in fleet.rss_by_kind()
