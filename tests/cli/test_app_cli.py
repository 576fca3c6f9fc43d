"""``mycelium-p2p join --app DIR``: a Flower App run unmodified by real node processes."""

from __future__ import annotations

from pathlib import Path

from mycelium_p2p.testing.procs import processes, run_cli, start_join, start_seed

APPS = Path(__file__).resolve().parents[1] / "apps"


def test_two_join_app_processes_commit_rounds_of_the_numpy_app(tmp_path: Path) -> None:
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        nodes = [
            start_join(
                procs,
                port,
                tmp_path / f"n{i}",
                "--app",
                str(APPS / "numpy_app"),
                "--run-config",
                "num-server-rounds=2 local-epochs=1",
                "--node-config",
                f"partition-id={i} num-partitions=2",
                "--heartbeat",
                "0.3",
            )
            for i in range(2)
        ]
        assert "numpyapp@1.0.0-" in nodes[0].output()  # the group's task is the app's
        # rounds 1..3 span two runs of the ServerApp (num-server-rounds=2)
        match = nodes[0].expect(r"round 3 \(term \d+\): accuracy ([0-9.]+)", timeout=90)
        assert float(match.group(1)) > 0.3  # the ClientApps' own evaluation; chance is 0.1
        for node in nodes:
            assert node.stop() == 0


def test_join_app_refuses_an_undeclared_run_config_key_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "join",
        "--create",
        "g",
        "--data-dir",
        str(tmp_path),
        "--app",
        str(APPS / "numpy_app"),
        "--run-config",
        "num-rounds=3",
    )
    assert result.returncode != 0
    assert "num-rounds" in result.stderr and "num-server-rounds" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_join_app_and_client_app_exclude_each_other(tmp_path: Path) -> None:
    result = run_cli(
        "join", "--create", "g", "--data-dir", str(tmp_path), "--app", "x", "--client-app", "m:a"
    )
    assert result.returncode != 0
    assert "exclude each other" in result.stderr
