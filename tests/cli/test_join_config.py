"""``join``'s options and the ``NodeConfig`` they make: each option sets one field, the one
docs/cli.md says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from mycelium_p2p.cli import cli
from mycelium_p2p.cli.join import join
from mycelium_p2p.node import node as node_module
from mycelium_p2p.node.config import NodeConfig

#: every ``join`` option that sets a field (click's parameter name): the argument given, the
#: value it makes, and the field it lands in ("section.field", or the node's own field);
#: each value differs from its default, so a field left at its default is caught
FIELDS: dict[str, tuple[str, Any, str]] = {
    "host": ("127.0.0.2", "127.0.0.2", "host"),
    "port": ("9123", 9123, "port"),
    "advertise_host": ("10.1.2.3", "10.1.2.3", "advertise_host"),
    "task": ("letters", "letters", "task"),
    "bootstrap_wait": ("12", 12.0, "bootstrap_wait"),
    "group": ("club", "club", "group.join"),
    "create": ("newclub", "newclub", "group.create"),
    "capacity": ("7", 7, "group.capacity"),
    "policy": ("invite-only", "invite-only", "group.policy"),
    "invite": ("INVITE", "INVITE", "group.invite"),
    "heartbeat": ("0.25", 0.25, "group.heartbeat_interval"),
    "strategy": ("fedavg", "fedavg", "fl.strategy"),
    "client_app": ("pkg.mod:app", "pkg.mod:app", "fl.client_app"),
    "app_dir": ("some/app", "some/app", "fl.app"),
    "run_config": ("num-server-rounds=2", "num-server-rounds=2", "fl.run_config"),
    "node_config": ("partition-id=1", "partition-id=1", "fl.app_node_config"),
    "data_shard": ("2/5", "2/5", "fl.data_shard"),
    "domain": ("3", 3, "fl.domain"),
    "shift": ("labels", "labels", "fl.shift"),
    "data_file": ("mine.npz", "mine.npz", "fl.data_file"),
    "round_pause": ("0", 0.0, "fl.round_pause"),
    "epochs": ("4", 4, "fl.local_epochs"),
    "lr": ("0.2", 0.2, "fl.learning_rate"),
    "max_app_failures": ("9", 9, "fl.max_app_failures"),
    "reply_timeout": ("17", 17.0, "fl.reply_timeout"),
    "threads": ("2", 2, "fl.torch_threads"),
    "isolation": ("process", "process", "fl.isolation"),
    "migrate": ("", False, "migration.migrate"),  # --no-migrate
    "merge": ("", False, "migration.merge"),  # --no-merge
    "evaluation_interval": ("45", 45.0, "migration.group_evaluation_interval"),
    "threshold": ("0.2", 0.2, "migration.performance_threshold"),
}
#: the options that set no field of their own: --bootstrap and --peers-file make
#: ``bootstrap`` (resolved), --data-dir is checked on its own, --events is the command's
NOT_FIELDS = {"bootstrap", "peers_file", "data_dir", "events_file", "web"}
#: two runs, each with the options of its own set and those of neither: some exclude each
#: other (--group/--create, --app/--client-app), and --no-migrate and --no-merge must differ
RUNS = [
    {"create", "client_app", "isolation", "migrate"},
    {"group", "app_dir", "run_config", "node_config", "merge"},
]


class Captured(Exception):
    """Raised by the stand-in ``Node`` with the config ``join`` made."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__("captured")
        self.config = config


def field_of(config: NodeConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def params() -> dict[str, click.Option]:
    return {p.name: p for p in join.params if isinstance(p, click.Option) and p.name}


def test_every_join_option_sets_one_field_of_its_own() -> None:
    assert set(params()) == set(FIELDS) | NOT_FIELDS
    paths = [path for _, _, path in FIELDS.values()]
    assert len(set(paths)) == len(paths)
    for path in paths:
        field_of(NodeConfig(), path)  # a real field


@pytest.mark.parametrize("given", RUNS)
def test_each_join_option_lands_in_its_field(
    given: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stand_in(config: NodeConfig, **_: Any) -> None:
        raise Captured(config)

    monkeypatch.setattr(node_module, "Node", stand_in)
    monkeypatch.delenv("MYCELIUM_BOOTSTRAP", raising=False)
    excluded = set().union(*RUNS) - given
    options = params()
    args = ["join", "--bootstrap", "127.0.0.1:8468", "--data-dir", str(tmp_path)]
    for name, (text, _, _) in FIELDS.items():
        if name in excluded:
            continue
        option = options[name]
        args += [option.secondary_opts[0]] if option.is_flag else [option.opts[0], text]
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, Captured), result.output
    config = result.exception.config
    assert config.bootstrap == [("127.0.0.1", 8468)]
    assert config.data_dir == tmp_path
    for name, (_, value, path) in FIELDS.items():
        if name not in excluded:
            assert field_of(config, path) == value, (name, path)
