"""What a node is told (``NodeConfig``, a section per layer) and what it reports
(``NodeEvent``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..addresses import Address
from ..dht import DhtConfig
from ..errors import ConfigError
from ..events import EventKind
from ..fl.limits import Screening, TrainCaps
from ..group.state import GroupConfig
from ..migration.policy import MigrationConfig


@dataclass(frozen=True)
class NodeEvent:
    """Something a node did, for people (``text``) and for programs (``kind`` and ``fields``).

    ``kind`` is one of ``events.KINDS`` (``mycelium_p2p/events.py`` says what each carries).
    """

    kind: EventKind
    text: str
    fields: dict[str, Any]
    at: float

    def as_json(self) -> dict[str, Any]:
        return {"t": self.at, "kind": self.kind, **self.fields}


Event = Callable[[NodeEvent], None]


@dataclass(frozen=True)
class GroupSettings:
    """Which group a node enters and how its group keeps time (``join``'s group options)."""

    join: str | None = None  # join this group (name or id); else the best joinable one
    create: str | None = None  # found a group with this name
    capacity: int = 10  # with create: most members
    policy: str = "open"  # with create: "open" or "invite-only"
    invite: str | None = None  # an invite into an invite-only group
    heartbeat_interval: float = 1.0
    stall_timeout: float = 0.0  # leave a group leaderless this long (0: 10 heartbeats)
    found_jitter: float | None = None  # no group found: wait up to this, look again (2 beats)
    advert_ttl: float = 120.0  # how long a group's advert lives in the DHT

    def member_config(self) -> GroupConfig:
        """What the ``GroupMember`` of each group we enter keeps to."""
        return GroupConfig(heartbeat_interval=self.heartbeat_interval)

    @property
    def founding_jitter(self) -> float:
        """How long, at most, a node that finds no group waits before it looks again and
        founds one (nodes started together then mostly find the first founder's group)."""
        if self.found_jitter is not None:
            return self.found_jitter
        return 2 * self.heartbeat_interval

    @property
    def merge_interval(self) -> float:
        """How often a leader looks for a group to merge into."""
        return 2 * self.heartbeat_interval

    @property
    def record_interval(self) -> float:
        """How often, at most, a group's advert goes to the DHT (and rivals are checked)."""
        return max(5.0, 5 * self.heartbeat_interval)


@dataclass(frozen=True)
class FlSettings:
    """What a node learns and how: its ClientApp and data, and as leader its rounds."""

    strategy: str = "fedmedian"  # robust to a bad member (measured: scripts/bench_poison.py)
    client_app: str | None = None  # "module:attr" of the user's own ClientApp
    app: str | None = None  # a Flower App directory (its ServerApp leads, its task is ours)
    run_config: str | None = None  # Flower syntax: "num-server-rounds=5 lr=0.1"
    app_node_config: str | None = None  # Flower syntax: "partition-id=0 num-partitions=4"
    isolation: str = "thread"  # where the ClientApp runs: "thread", or "process" (a worker)
    torch_threads: int = 0  # with isolation="process": the worker's torch threads (0: default)
    data_shard: str = "0/1"  # the digits task's data: this node's share ...
    domain: int = 0  # ... its domain (rotation, or label permutation) ...
    shift: str = "rotate"  # ... and which shift a domain is
    data_file: str | None = None  # the node's own data (.npz or .csv) instead
    local_epochs: int = 1
    learning_rate: float = 0.05
    round_pause: float = 0.5  # as leader: seconds between rounds
    reply_timeout: float = 60.0  # as leader: a member's training reply; any model transfer
    max_app_failures: int = 5  # the ClientApp failing this many calls in a row: leave (0: never)
    screening: Screening = field(default_factory=Screening)  # what a leader accepts from members
    train_caps: TrainCaps = field(default_factory=TrainCaps)  # the most a leader may ask of us


@dataclass(frozen=True)
class MigrationSettings:
    """Moves between groups: a node's own (migrate), and as leader its group's (split,
    merge)."""

    migrate: bool = True  # move to a group that serves this node's data better
    split: bool = True  # leaders split groups whose members' updates disagree
    merge: bool = True  # leaders merge their group into a larger one that serves them as well
    group_evaluation_interval: float = 30.0  # how often candidate groups are measured
    performance_threshold: float = 0.05  # the accuracy gain that justifies a move

    def policy_config(self) -> MigrationConfig:
        """What the node's ``MigrationPolicy`` decides moves by."""
        return MigrationConfig(
            performance_threshold=self.performance_threshold,
            cooldown=2 * self.group_evaluation_interval,
        )


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs, a section per layer; the defaults make a digits node that
    joins any open group.

    The node's own fields are where it listens, whom it asks first, where it keeps its key,
    its task and its seed; ``dht``, ``group``, ``fl`` and ``migration`` hold each layer's.
    ``NodeConfig.from_flat(create="g", round_pause=0.0)`` builds one from flat names.
    """

    bootstrap: list[Address] = field(default_factory=list)
    host: str = "0.0.0.0"
    port: int = 0  # the DHT's UDP port and the models' TCP port (0: any free ones)
    advertise_host: str | None = None  # the address peers on other machines dial
    data_dir: Path | None = None  # None: a throwaway identity (tests, benchmarks)
    task: str = "digits"  # what the node's groups learn (with an app: the app's)
    seed: int = 0  # the node's randomness and the digits task's data
    bootstrap_wait: float = 300.0  # keep trying the bootstrap peers this long at start
    presence_interval: float = 30.0  # presence refresh; a new group or role is published at once
    dht: DhtConfig = field(default_factory=DhtConfig)
    group: GroupSettings = field(default_factory=GroupSettings)
    fl: FlSettings = field(default_factory=FlSettings)
    migration: MigrationSettings = field(default_factory=MigrationSettings)

    @classmethod
    def from_flat(cls, **settings: Any) -> NodeConfig:
        """A config from flat names, each routed to its section: ``from_flat(create="g",
        round_pause=0.0, migrate=False)`` is ``NodeConfig(group=GroupSettings(create="g"),
        fl=FlSettings(round_pause=0.0), migration=MigrationSettings(migrate=False))``.

        A flat name is a field's own name, in whichever section holds it (``dht`` is the
        node's ``DhtConfig``); ``group`` is the group to join (``GroupSettings.join``, as
        ``--group``). An unknown name raises ``ConfigError``.
        """
        own: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        for name, value in settings.items():
            place = FLAT_NAMES.get(name)
            if place is None:
                raise ConfigError(f"unknown node setting {name!r}")
            section, field_name = place
            (sections[section] if section else own)[field_name] = value
        parts = {name: kind(**sections[name]) for name, kind in _SECTIONS.items()}
        return cls(**own, **parts)


_SECTIONS: dict[str, type[Any]] = {
    "group": GroupSettings,
    "fl": FlSettings,
    "migration": MigrationSettings,
}

#: Each flat name ``NodeConfig.from_flat`` takes and where it goes: (section, field), the
#: section ``None`` for the node's own fields.
FLAT_NAMES: dict[str, tuple[str | None, str]] = {
    **{f.name: (None, f.name) for f in fields(NodeConfig) if f.name not in _SECTIONS},
    **{f.name: (s, f.name) for s, kind in _SECTIONS.items() for f in fields(kind)},
    "group": ("group", "join"),
}
