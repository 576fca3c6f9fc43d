"""Real processes: a seed peer and `mycelium-p2p join` nodes; the leader dies by SIGKILL."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from pathlib import Path

import pytest

from mycelium_p2p.testing.procs import pid_alive, processes, run_cli, start_join, start_seed

FAST = ("--heartbeat", "0.5", "--round-pause", "0.2")


def groups(port: int) -> list[dict]:
    result = run_cli("groups", "-b", f"127.0.0.1:{port}", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.chaos
def test_sigkill_of_the_leader_process_loses_no_round(tmp_path: Path) -> None:
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        nodes = [
            start_join(procs, port, tmp_path / f"n{i}", "--data-shard", f"{i}/3", *FAST)
            for i in range(3)
        ]
        leader = nodes[0]  # the founder leads term 1
        leader.expect(r"leader of group .*, term 1")
        leader.expect(r"round ([5-9]|\d{2,}) \(term 1\).*3 members", timeout=60)
        leader.signal(signal.SIGKILL)
        leader.popen.wait(10)
        rounds_before = [
            int(line.split("round ")[1].split()[0])
            for line in leader.lines
            if " round " in line and "(term 1)" in line
        ]
        survivors = [n for n in nodes if n is not leader]
        took_over = None
        for node in survivors:
            try:
                took_over = node.expect(
                    r"leader of group .*, term (\d+), from round (\d+)", timeout=10
                )
                new_leader = node
                break
            except AssertionError:
                continue
        assert took_over is not None, "no survivor became leader"
        assert int(took_over.group(1)) >= 2
        resumed_from = int(took_over.group(2))
        assert resumed_from >= max(rounds_before)  # every round the old leader completed
        first = new_leader.expect(r"round (\d+) \(term [2-9]", timeout=30)
        assert int(first.group(1)) == resumed_from + 1
        for _ in range(40):  # a member the new leader had not heard of yet rejoins it
            (group,) = groups(port)
            if group["members"] == 2:
                break
            time.sleep(0.25)
        assert group["term"] >= 2 and group["members"] == 2
        for node in survivors:
            assert node.stop() == 0
            assert "left the group and stopped" in node.output()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_join_with_worker_processes_trains_and_no_worker_outlives_its_node(
    tmp_path: Path,
) -> None:
    """`join --isolation process`: each node trains in a worker process of its own; a node
    killed by SIGKILL takes its worker with it, a node stopped by SIGTERM stops its worker."""
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        extra = ("--isolation", "process", "--threads", "1", *FAST)
        nodes = [
            start_join(procs, port, tmp_path / f"n{i}", "--data-shard", f"{i}/2", *extra)
            for i in range(2)
        ]
        nodes[0].expect(r"round ([3-9]|\d{2,}) \(term 1\).*2 members", timeout=90)
        workers = {node.pid: _children(node.pid) for node in nodes}
        assert all(len(w) == 1 for w in workers.values()), workers
        member, leader = nodes[1], nodes[0]
        member.signal(signal.SIGKILL)
        member.popen.wait(10)
        (orphan,) = workers[member.pid]
        deadline = time.monotonic() + 15
        while pid_alive(orphan) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(orphan), "the SIGKILLed node's worker is still running"
        assert leader.stop() == 0
        (worker,) = workers[leader.pid]
        assert not pid_alive(worker)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_client_app_holding_the_gil_upsets_leadership_only_in_a_thread(
    tmp_path: Path, isolation: str
) -> None:
    """Training holds the GIL for 3 s a call; the lease is 1.25 s (0.5 s heartbeats). In a
    thread the node's event loop stops for as long, heartbeats stop, and leadership is upset
    (a new term, a leader stepping down, a leaderless group) although nobody failed; in a
    worker process the leader keeps its term, round after round."""
    app = ("--client-app", "tests.helpers.gil_app:app", "--no-migrate")
    extra = (*app, "--isolation", isolation, "--heartbeat", "0.5", "--round-pause", "0.2")
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        leader = start_join(procs, port, tmp_path / "a", "--create", "gil", *extra)
        member = start_join(procs, port, tmp_path / "b", "--group", "gil", *extra)
        # a leader deposed or stepping down, or a group left leaderless: nobody failed
        upset = r"leader of group \S+, term ([2-9]|\d{2,})|stepped down|no leader for"
        if isolation == "thread":
            deadline, seen = time.monotonic() + 45, None
            while seen is None and time.monotonic() < deadline:
                for node in (leader, member):
                    with contextlib.suppress(AssertionError):
                        seen = node.expect(upset, timeout=0.5)
                        break
            assert seen is not None, "leadership never upset:\n" + leader.output()[-3000:]
        else:
            leader.expect(r"round 4 \(term 1\).*2 members", timeout=60)
            for node in (member, leader):  # the member first: a leader leaving hands over
                assert node.stop() == 0
                assert not re.search(upset, node.output()), node.output()[-3000:]


def test_join_exits_1_saying_why_when_its_client_app_keeps_failing(tmp_path: Path) -> None:
    """The node's ClientApp raises on every call: `join` logs the traceback once, leaves its
    group after --max-app-failures calls in a row and exits 1 with the error."""
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        app = ("--client-app", "tests.helpers.raising_app:app", "--max-app-failures", "3")
        node = start_join(procs, port, tmp_path / "n", "--create", "buggy", *FAST, *app)
        node.expect(r"ClientApp failed 3 times in a row", timeout=60)
        assert node.popen.wait(timeout=30) == 1
        output = "\n".join(node.lines) + (node.popen.stdout.read() if node.popen.stdout else "")
        assert output.count("Traceback") == 1, output
        assert "shapes (2, 2) and (3,) do not align" in output
