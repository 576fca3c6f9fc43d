"""What a node is told (``NodeConfig``) and what it reports (``NodeEvent``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..addresses import Address
from ..dht import DhtConfig
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


@dataclass
class NodeConfig:
    """Everything a node needs; the defaults make a digits node that joins any open group."""

    bootstrap: list[Address] = field(default_factory=list)
    host: str = "0.0.0.0"
    port: int = 0  # the DHT's UDP port and the models' TCP port (0: any free ones)
    advertise_host: str | None = None  # the address peers on other machines dial
    data_dir: Path | None = None  # None: a throwaway identity (tests, benchmarks)
    task: str = "digits"
    group: str | None = None  # join this group (name or id)
    create: str | None = None  # found a group with this name
    capacity: int = 10
    policy: str = "open"
    invite: str | None = None
    strategy: str = "fedmedian"  # robust to a bad member (measured: scripts/bench_poison.py)
    client_app: str | None = None  # "module:attr" of the user's own ClientApp
    app: str | None = None  # a Flower App directory (its ServerApp leads, its task is ours)
    run_config: str | None = None  # Flower syntax: "num-server-rounds=5 lr=0.1"
    app_node_config: str | None = None  # Flower syntax: "partition-id=0 num-partitions=4"
    isolation: str = "thread"  # where the ClientApp runs: "thread", or "process" (a worker)
    torch_threads: int = 0  # with isolation="process": the worker's torch threads (0: default)
    data_shard: str = "0/1"
    domain: int = 0
    shift: str = "rotate"
    data_file: str | None = None
    seed: int = 0
    heartbeat_interval: float = 1.0
    group_evaluation_interval: float = 30.0  # how often candidate groups are measured
    performance_threshold: float = 0.05  # the accuracy gain that justifies a move
    migrate: bool = True
    split: bool = True  # leaders split groups whose members' updates disagree
    round_pause: float = 0.5
    bootstrap_wait: float = 300.0  # keep trying the bootstrap peers this long at start
    stall_timeout: float = 0.0  # leave a group leaderless this long (0: 10 heartbeats)
    found_jitter: float | None = None  # no group found: wait up to this, look again (2 beats)
    merge: bool = True  # leaders merge their group into a larger one that serves them as well
    max_app_failures: int = 5  # the ClientApp failing this many calls in a row: leave (0: never)
    local_epochs: int = 1
    learning_rate: float = 0.05
    advert_ttl: float = 120.0
    presence_interval: float = 30.0  # presence refresh; a new group or role is published at once
    reply_timeout: float = 60.0
    dht: DhtConfig = field(default_factory=DhtConfig)
    screening: Screening = field(default_factory=Screening)  # what a leader accepts from members
    train_caps: TrainCaps = field(default_factory=TrainCaps)  # the most a leader may ask of us

    def group_config(self) -> GroupConfig:
        return GroupConfig(heartbeat_interval=self.heartbeat_interval)

    def migration_config(self) -> MigrationConfig:
        return MigrationConfig(
            performance_threshold=self.performance_threshold,
            cooldown=2 * self.group_evaluation_interval,
        )

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
