"""`mycelium-p2p demo` end to end (short mode), and the pieces it is made of."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mycelium_p2p.cli.demo_view import DemoState, NodeView
from mycelium_p2p.cli.localnet import LocalNet, Peer
from mycelium_p2p.testing.procs import CLI, REPO, pid_alive


def test_events_are_read_as_whole_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    peer = Peer("n", [], tmp_path / "n.log", path)
    path.write_bytes(b'{"t": 1, "kind": "up"}\n{"t": 2, "ki')
    assert [e["kind"] for e in peer.new_events()] == ["up"]
    with open(path, "ab") as fh:
        fh.write(b'nd": "round"}\nnot json\n[1, 2]\n')
    events = list(peer.new_events())
    assert [e["kind"] for e in events] == ["round"] and events[0]["peer"] == "n"
    assert list(peer.new_events()) == []


def test_state_follows_migrations_and_measures_purity() -> None:
    state = DemoState()
    for name, domain in (("a", 0), ("b", 1), ("c", 0)):
        state.nodes[name] = NodeView(name, domain)
    state.apply({"peer": "a", "kind": "founded", "group": "g1", "group_id": "1", "t": 1})
    state.apply({"peer": "b", "kind": "joined", "group": "g1", "group_id": "1", "t": 2})
    state.apply({"peer": "c", "kind": "founded", "group": "g2", "group_id": "2", "t": 2})
    assert state.purity() == pytest.approx(2 / 3)
    state.apply({"peer": "b", "kind": "moving", "group_id": "1", "to": "g3", "t": 3})
    state.apply({"peer": "b", "kind": "founded", "group": "g3", "group_id": "3", "t": 3})
    state.apply({"peer": "c", "kind": "evaluated", "group_id": "2", "accuracy": 0.5, "t": 4})
    state.apply({"peer": "unknown", "kind": "founded", "group_id": "9", "t": 5})
    assert state.purity() == 1.0 and state.moves == 1
    assert state.nodes["c"].accuracy == 0.5 and state.nodes["b"].moves == 1
    assert {g.name for g in state.live_groups()} == {"g1", "g2", "g3"}


def test_a_restarted_peer_does_not_replay_its_events(tmp_path: Path) -> None:
    with LocalNet(tmp_path) as net:
        peer = net._start("p", [sys.executable, "-c", "pass"], events=True, prefix=None)
        assert peer.events_path is not None
        peer.events_path.write_text('{"t": 1, "kind": "up"}\n')
        peer.popen.wait(10)  # type: ignore[union-attr]
        assert [e["kind"] for e in net.new_events()] == ["up"]
        again = net.restart("p")
        again.popen.wait(10)  # type: ignore[union-attr]
        assert net.new_events() == []
        assert len(net.started_pids) == 2


@pytest.mark.slow
def test_demo_runs_end_to_end_in_a_short_mode(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    started = time.monotonic()
    result = subprocess.run(
        [
            *CLI,
            "demo",
            "--no-live",
            "--nodes",
            "5",
            "--domains",
            "2",
            "--duration",
            "25",
            "--evaluation-interval",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo summary" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "demo.png").stat().st_size > 10_000
    assert summary["groups"] and summary["pids"]
    assert all(code is not None for code in summary["exit_codes"].values())
    assert not [pid for pid in summary["pids"] if pid_alive(pid)]
    assert summary["web"].startswith("http://127.0.0.1:") and summary["web"] in result.stdout
    assert summary["web_groups"] >= 1  # the web view served the network
    assert summary["failover_seconds"], (
        "the killed leader's group never elected a new one:\n"
        + result.stdout[-4000:]
        + "".join(  # what each node saw: the next time this fails, why
            f"\n--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-25:])
            for log in sorted((out / "run" / "logs").glob("n*.log"))
        )
    )
    assert time.monotonic() - started < 240


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_and_every_node(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        [*CLI, "demo", "--no-live", "--nodes", "3", "--domains", "1", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,  # like a terminal: Ctrl-C reaches the whole process group
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        for line in proc.stdout:
            if "joined" in line or time.monotonic() > deadline:
                break
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    pids = json.loads((out / "summary.json").read_text())["pids"]
    assert len(pids) == 4
    assert not [pid for pid in pids if pid_alive(pid)]
