"""``NodeConfig``: a section per layer, and ``from_flat`` routing flat names to them."""

from __future__ import annotations

import dataclasses

import pytest

from mycelium_p2p.dht import DhtConfig
from mycelium_p2p.errors import ConfigError
from mycelium_p2p.node.config import (
    FLAT_NAMES,
    FlSettings,
    GroupSettings,
    MigrationSettings,
    NodeConfig,
)


def test_from_flat_routes_each_name_to_its_section() -> None:
    dht = DhtConfig(maintenance_interval=0.5)
    config = NodeConfig.from_flat(
        host="127.0.0.1",
        dht=dht,
        group="club",
        heartbeat_interval=0.3,
        round_pause=0.0,
        domain=2,
        migrate=False,
        group_evaluation_interval=5.0,
    )
    assert config == NodeConfig(
        host="127.0.0.1",
        dht=dht,
        group=GroupSettings(join="club", heartbeat_interval=0.3),
        fl=FlSettings(round_pause=0.0, domain=2),
        migration=MigrationSettings(migrate=False, group_evaluation_interval=5.0),
    )
    assert NodeConfig.from_flat() == NodeConfig()


def test_from_flat_refuses_an_unknown_name() -> None:
    with pytest.raises(ConfigError, match="'round_puase'"):
        NodeConfig.from_flat(create="g", round_puase=0.0)
    with pytest.raises(ConfigError, match="'fl'"):  # sections are not flat names
        NodeConfig.from_flat(fl=FlSettings())


def test_every_field_has_one_flat_name() -> None:
    sections = {"group": GroupSettings, "fl": FlSettings, "migration": MigrationSettings}
    own = [f.name for f in dataclasses.fields(NodeConfig) if f.name not in sections]
    placed = [(None, name) for name in own] + [
        (section, f.name) for section, kind in sections.items() for f in dataclasses.fields(kind)
    ]
    assert sorted(FLAT_NAMES.values(), key=str) == sorted(
        [*placed, ("group", "join")], key=str
    )  # "group" and "join" both name the group to join
    assert FLAT_NAMES["group"] == FLAT_NAMES["join"] == ("group", "join")


def test_the_sections_are_frozen_and_keep_the_derived_settings() -> None:
    config = NodeConfig.from_flat(heartbeat_interval=2.0, group_evaluation_interval=10.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.migration.migrate = False  # type: ignore[misc]
    assert config.group.founding_jitter == 4.0
    assert config.group.merge_interval == 4.0
    assert config.group.record_interval == 10.0
    assert config.group.member_config().heartbeat_interval == 2.0
    assert config.migration.policy_config().cooldown == 20.0
