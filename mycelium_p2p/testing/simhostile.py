"""Hostile DHT peers in a ``SimNetwork`` simulation (``scripts/sim_dht.py --hostile/--sybils``).

``SimAdversary`` plans and runs them, all from its own seeded rng (the honest peers' draws are
left as they are): a mix of behaviours (``hostile.BEHAVIOURS``) joined among the honest peers
during the build, its sybils ground next to the published record keys in turn, and targeted
sybils, ground next to a few of those keys, joined at once before or after the first put.
Hostile peers are never churned and never read. Ids come from keys and are proven, so every
sybil costs about ``2**bits`` key generations (``sybil_identity``): a dozen bits is about 0.2 s
of CPU a sybil here.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dht import DhtConfig, DhtNode
from ..dht.rtt import Address
from ..errors import BootstrapError
from ..identity import Identity
from .hostile import BEHAVIOURS, HostileCrew, HostileDhtNode, sim_hostile_peer, sybil_identity
from .network import SimNetwork
from .swarm import join


@dataclass
class HostilePeer:
    behaviour: str
    node: HostileDhtNode
    targeted: bool  # a targeted sybil (``sybils``), not one of the mix


@dataclass
class SimAdversary:
    """Hostile peers for one simulation: ``mix`` of them cycled over ``behaviours``, and
    ``sybils`` targeted ones on the first ``targets`` of ``keys``, each id sharing ``bits``
    leading bits with its key."""

    network: SimNetwork
    config: DhtConfig
    seed: int
    keys: Sequence[bytes]
    mix: int = 0
    behaviours: Sequence[str] = BEHAVIOURS
    sybils: int = 0
    targets: int = 4
    bits: int = 12
    peers: list[HostilePeer] = field(default_factory=list)
    join_failures: int = 0
    target_reads: Counter[bool] = field(default_factory=Counter)  # by success

    def __post_init__(self) -> None:
        unknown = set(self.behaviours) - set(BEHAVIOURS)
        if unknown or not self.behaviours:
            raise ValueError(f"behaviours are some of {', '.join(BEHAVIOURS)}: {unknown}")
        if not self.keys or (self.sybils and not 1 <= self.targets <= len(self.keys)):
            raise ValueError("need keys, and 1 <= targets <= len(keys) for targeted sybils")
        self.rng = random.Random(f"hostile-{self.seed}")
        self.crew = HostileCrew(dead_host=self.network.new_host())  # made-up contacts go there
        self.target_keys = frozenset(self.keys[: self.targets]) if self.sybils else frozenset()
        self.plan: list[tuple[str, Identity | None]] = []
        mixed_sybils = 0
        for i in range(self.mix):
            behaviour = self.behaviours[i % len(self.behaviours)]
            identity = None
            if behaviour == "sybil":  # the mix's sybils sit next to each key in turn
                identity = self.ground(self.keys[mixed_sybils % len(self.keys)])
                mixed_sybils += 1
            self.plan.append((behaviour, identity))
        self.targeted = [self.ground(self.keys[j % self.targets]) for j in range(self.sybils)]
        self._next_mixed = iter(self.plan)

    def ground(self, key: bytes) -> Identity:
        return sybil_identity(key, self.bits, seed=self.rng.getrandbits(32))

    def build_slots(self, joiners: int) -> set[int]:
        """Which of the build's ``joiners`` joins (0-based) are the mix's, spread at random."""
        if self.mix > joiners:
            raise ValueError(f"{self.mix} hostile peers do not fit in {joiners} joins")
        return set(self.rng.sample(range(joiners), self.mix))

    async def add(
        self, behaviour: str, identity: Identity | None, seed: Address, targeted: bool = False
    ) -> None:
        node = await sim_hostile_peer(
            self.network, self.rng, behaviour, self.crew, self.config, identity
        )
        self.peers.append(HostilePeer(behaviour, node, targeted))
        try:
            await join(node, seed)
        except BootstrapError:
            self.join_failures += 1

    async def join_mix_peer(self, seed: Address) -> None:
        """The next of the mix joins through ``seed``."""
        behaviour, identity = next(self._next_mixed)
        await self.add(behaviour, identity, seed)

    async def join_targeted(
        self, seeds: Sequence[Address], pick: random.Random, batch: int, interval: float = 0.5
    ) -> None:
        """Every targeted sybil joins, ``batch`` every ``interval`` s, through seeds from
        ``pick``."""
        loop = asyncio.get_running_loop()
        for first in range(0, len(self.targeted), batch):
            began = loop.time()
            group = self.targeted[first : first + batch]
            await asyncio.gather(
                *(self.add("sybil", i, pick.choice(seeds), targeted=True) for i in group)
            )
            await asyncio.sleep(max(0.0, began + interval - loop.time()))

    def count_read(self, key: bytes, ok: bool) -> None:
        """A read of ``key`` ended, finding its record or not: kept if a target's."""
        if key in self.target_keys:
            self.target_reads[ok] += 1

    def report(self, honest: Sequence[DhtNode]) -> dict[str, Any]:
        """Hostile peers by behaviour, how many sit in an honest peer's routing table (and in
        how many tables), the requests they received, and the liars honest peers dropped."""
        tables: Counter[bytes] = Counter()
        for node in honest:
            tables.update(c.id for b in node.protocol.router.buckets for c in b.get_nodes())
        kinds = [("targeted_sybil" if p.targeted else p.behaviour, p) for p in self.peers]
        by: dict[str, Counter[str]] = {
            "count": Counter(),
            "in_tables": Counter(),
            "table_entries": Counter(),
            "asked": Counter(),
        }
        for kind, p in kinds:
            entries = tables[p.node.node.id]
            by["count"][kind] += 1
            by["in_tables"][kind] += entries > 0
            by["table_entries"][kind] += entries
            by["asked"][kind] += p.node.protocol.asked
        targeted = self.target_reads.total()
        return {
            "hostile": len(self.peers),
            "behaviours": list(self.behaviours),
            "sybils": self.sybils,
            "target_gets": targeted,
            "target_gets_ok": self.target_reads[True],
            "target_get_success": self.target_reads[True] / targeted if targeted else float("nan"),
            "hostile_by_behaviour": dict(sorted(by["count"].items())),
            "hostile_in_tables": dict(sorted(by["in_tables"].items())),
            "hostile_table_entries": dict(sorted(by["table_entries"].items())),
            "hostile_asked": dict(sorted(by["asked"].items())),
            "hostile_join_failures": self.join_failures,
            "sybil_bits": self.bits,
            "sybil_targets": len(self.target_keys),
            "liars_dropped": sum(node.stats.liars_dropped for node in honest),
        }


def add_arguments(group: Any) -> None:
    """``--hostile``, ``--behaviours``, ``--sybils``, ``--sybil-targets``, ``--sybil-bits``,
    ``--sybils-first`` on an ``argparse`` parser or group."""
    group.add_argument("--hostile", type=float, default=0.0, help="fraction of N hostile")
    group.add_argument(
        "--behaviours",
        type=lambda text: tuple(text.split(",")),
        default=BEHAVIOURS,
        help=f"the mix, cycled over (default {','.join(BEHAVIOURS)})",
    )
    group.add_argument("--sybils", type=int, default=0, help="targeted sybils, besides N")
    group.add_argument("--sybil-targets", type=int, default=4, help="record keys they target")
    group.add_argument("--sybil-bits", type=int, default=12, help="id bits ground, <= 24")
    group.add_argument(
        "--sybils-first", action="store_true", help="targeted sybils join before the first put"
    )


def argument_error(args: argparse.Namespace, honest: int) -> str | None:
    """What is wrong with those arguments, if anything; ``honest``: honest peers needed."""
    if not 0 <= args.hostile < 1 or args.peers - round(args.hostile * args.peers) < honest:
        return f"need 0 <= --hostile < 1, leaving at least {honest} honest peers"
    if args.sybils < 0 or not 1 <= args.sybil_targets <= args.records:
        return "need --sybils >= 0 and 1 <= --sybil-targets <= --records"
    if not 0 <= args.sybil_bits <= 24 or not set(args.behaviours) <= set(BEHAVIOURS):
        return f"need 0 <= --sybil-bits <= 24 and --behaviours among {','.join(BEHAVIOURS)}"
    return None
