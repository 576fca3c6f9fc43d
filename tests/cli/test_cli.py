"""The command line, in-process (CliRunner) for arguments and as real processes end to end."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mycelium_p2p.cli import cli
from mycelium_p2p.testing.procs import CLI, Proc, processes, run_cli, start_seed


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_id_creates_and_shows_the_key(tmp_path: Path) -> None:
    code, out = invoke("id", "--data-dir", str(tmp_path), "--json")
    assert code == 0
    info = json.loads(out)
    assert len(bytes.fromhex(info["node_id"])) == 20
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    assert json.loads(invoke("id", "--data-dir", str(tmp_path), "--json")[1]) == info


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["groups"], "give at least one --bootstrap"),
        (["groups", "-b", "host:notaport"], "is not a number"),
        (["groups", "-b", "127.0.0.1:99999"], "outside 1..65535"),
        (["groups", "-b", "no-such-host.invalid:8468"], "cannot resolve"),
        (["bootstrap", "--port", "70000"], "70000"),
        (["--config", "/no/such/file.toml", "groups"], "cannot read"),
    ],
)
def test_bad_arguments_get_one_line_and_a_non_zero_exit(args: list[str], message: str) -> None:
    code, out = invoke(*args)
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_unreachable_bootstrap_is_a_one_line_error() -> None:
    result = run_cli("groups", "-b", "127.0.0.1:9", "--timeout", "1.5")
    assert result.returncode == 1
    assert "no bootstrap peer answered" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_file_sets_defaults(tmp_path: Path) -> None:
    config = tmp_path / "m.toml"
    config.write_text('[groups]\nbootstrap = ["127.0.0.1:9"]\ntimeout = 1.0\n')
    code, out = invoke("--config", str(config), "groups")
    assert code == 1 and "no bootstrap peer answered" in out


@pytest.mark.slow
def test_bootstrap_publisher_and_groups_as_separate_processes(tmp_path: Path) -> None:
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        for name, accuracy in (("alpha", 0.91), ("beta", 0.42)):
            pub = Proc(
                [
                    sys.executable,
                    "-m",
                    "tests.helpers.publisher",
                    "--bootstrap",
                    f"127.0.0.1:{port}",
                    "--name",
                    name,
                    "--accuracy",
                    str(accuracy),
                ]
            )
            procs.append(pub)
            pub.expect(r"published")
        result = run_cli("groups", "-b", f"127.0.0.1:{port}", "--json")
        assert result.returncode == 0, result.stderr
        groups = {g["name"]: g for g in json.loads(result.stdout)}
        assert set(groups) == {"alpha", "beta"}
        assert groups["alpha"]["accuracy"] == 0.91 and groups["beta"]["members"] == 2
        table = run_cli("groups", "-b", f"localhost:{port}")
        assert "alpha" in table.stdout and "91.0%" in table.stdout
        watch = run_cli(
            "groups",
            "-b",
            f"127.0.0.1:{port}",
            "--json",
            "--watch",
            "--interval",
            "0.2",
            "--count",
            "3",
        )
        assert len(watch.stdout.strip().splitlines()) == 3
        # a seed stops cleanly on SIGTERM, and a second seed refuses its data dir meanwhile
        clash = run_cli("bootstrap", "--port", "0", "--data-dir", str(tmp_path / "seed"))
        assert clash.returncode == 1 and "in use" in clash.stderr
        seed = procs[0]
        assert seed.stop() == 0  # one SIGTERM
        assert "seed peer stopped" in seed.output()


def test_sample_config_names_only_real_options() -> None:
    import tomllib

    config = tomllib.loads((Path(__file__).parents[2] / "bootstrap/mycelium.toml").read_text())
    for command, table in config.items():
        params = {p.name for p in cli.commands[command].params}
        assert {k.replace("-", "_") for k in table} <= params, command


def test_peers_example_parses() -> None:
    from mycelium_p2p.addresses import read_peers_file

    peers = read_peers_file(Path(__file__).parents[2] / "bootstrap/peers.example")
    assert peers == [("198.18.0.1", 8468), ("198.18.0.2", 8468)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["join"], "give at least one --bootstrap"),
        (["join", "--create", "a", "--group", "b"], "exclude each other"),
        (["join", "--create", "a", "--client-app", "nope"], "module:attribute"),
        (["join", "--create", "a", "--client-app", "no_such_mod_q:app"], "cannot import"),
        (["join", "--create", "a", "--data-shard", "3/2"], "shard"),
        (["join", "--create", "a", "--strategy", "sgd"], "sgd"),
        (["invite", "--group", "abc", "--node-key", "zz"], "not hex"),
        (["invite", "--group", "abc", "--node-key", "ab" * 32], "not a group this node"),
    ],
)
def test_join_and_invite_refuse_bad_input_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    code, out = invoke(
        *args, *(["--data-dir", str(tmp_path)] if args[0] != "join" or "--create" in args else [])
    )
    assert code != 0
    assert message in out, out
    assert "Traceback" not in out


def test_join_with_an_unreachable_bootstrap_is_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "join", "-b", "127.0.0.1:9", "--data-dir", str(tmp_path), "--bootstrap-wait", "8"
    )
    assert result.returncode == 1
    assert "trying again" in result.stdout  # it waits a while for a seed that is starting
    assert "no bootstrap peer answered" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_invite_only_group_end_to_end_with_the_cli(tmp_path: Path) -> None:
    with processes() as procs:
        port = start_seed(procs, tmp_path / "seed")
        owner = Proc(
            [
                *CLI,
                "join",
                "-b",
                f"127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--create",
                "club",
                "--policy",
                "invite-only",
                "--data-dir",
                str(tmp_path / "owner"),
                "--heartbeat",
                "0.5",
            ]
        )
        procs.append(owner)
        group_id = owner.expect(r"founded group club \((\w+)\)").group(1)
        owner.expect(r"round 1 ")
        guest_key = json.loads(
            run_cli("id", "--data-dir", str(tmp_path / "guest"), "--json").stdout
        )["public_key"]
        refused = run_cli(
            "join",
            "-b",
            f"127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--group",
            "club",
            "--data-dir",
            str(tmp_path / "guest"),
        )
        assert refused.returncode == 1 and "invite-only" in refused.stderr
        bad = run_cli(
            "join",
            "-b",
            f"127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--group",
            "club",
            "--invite",
            "myc-invite-garbage",
            "--data-dir",
            str(tmp_path / "guest"),
        )
        assert bad.returncode == 1 and "garbled" in bad.stderr
        invite = run_cli(
            "invite",
            "--group",
            group_id[:6],
            "--node-key",
            guest_key,
            "--data-dir",
            str(tmp_path / "owner"),
        )
        assert invite.returncode == 0, invite.stderr
        guest = Proc(
            [
                *CLI,
                "join",
                "-b",
                f"127.0.0.1:{port}",
                "--host",
                "127.0.0.1",
                "--group",
                "club",
                "--invite",
                invite.stdout.strip(),
                "--data-dir",
                str(tmp_path / "guest"),
                "--heartbeat",
                "0.5",
            ]
        )
        procs.append(guest)
        guest.expect(r"joined group club")
        owner.expect(r"round \d+ \(term 1\).*2 members")
        for _ in range(10):  # each node publishes its signed heartbeat when it joins
            listing = json.loads(run_cli("nodes", "-b", f"127.0.0.1:{port}", "--json").stdout)
            roles = sorted(row["role"] for row in listing if row["group"] == "club")
            if roles == ["leader", "member"]:
                break
            time.sleep(0.5)
        assert roles == ["leader", "member"]
        club = [row for row in listing if row["group"] == "club"]
        assert all(row["bytes_in"] > 0 and row["bytes_out"] > 0 for row in club)  # self-reported
