"""A mycelium-p2p network on a ``Lan``: a seed in host 0 and a ``join`` in every other host,
on the ports (and behind the firewall rules) of the LAN runbook (docs/operations.md)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .hostproc import HostProc
from .netns import Lan
from .procs import CLI

SEED_PORT = 8468  # the seed's UDP port, as on a real LAN
NODE_PORT = 8470  # every full node's UDP (DHT) and TCP (models) port: one host each
SEED_RULE = f"udp dport {SEED_PORT}"
NODE_RULE = f"meta l4proto {{ tcp, udp }} th dport {NODE_PORT}"


@dataclass
class Network:
    """A seed in host 0 and one `mycelium-p2p join` in each other host of ``lan``."""

    lan: Lan
    seed: HostProc
    joins: list[HostProc]

    @property
    def bootstrap(self) -> str:
        return f"{self.lan.addr(0)}:{SEED_PORT}"

    def query(
        self, host: int, *args: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a CLI command that takes ``--bootstrap`` in ``host``, through the seed."""
        wide = {"COLUMNS": "120"}  # rich tables are not cut to 80 columns in a pipe
        return self.lan.exec(host, [*CLI, *args, "-b", self.bootstrap], timeout, wide)

    def query_json(self, host: int, command: str) -> list[dict[str, Any]]:
        """``groups --json`` or ``nodes --json`` from ``host``; raises with stderr on failure."""
        result = self.query(host, command, "--json", "--timeout", "10")
        if result.returncode != 0:
            raise RuntimeError(f"{command} from host {host}: {result.stderr.strip()}")
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def wait_for_members(
        self, host: int, members: int, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Poll ``groups`` from ``host`` until the groups hold ``members`` nodes in all."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                seen = self.query_json(host, "groups")
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError):
                seen = []
            if sum(g["members"] for g in seen) == members:
                return seen
            time.sleep(1.0)
        raise TimeoutError(f"groups never held {members} members within {timeout:g} s: {seen}")


def start_network(
    lan: Lan,
    *,
    domains: int = 1,
    wildcard: bool = False,
    firewall: bool = False,
    join_args: Sequence[str] = (),
) -> Network:
    """Start the seed, then the first join (which founds a group), then the others at once.

    Each join gets shard ``i/(hosts-1)`` of the digits data and domain ``i % domains``, its own
    data dir, and listens on its host's address (``wildcard``: on 0.0.0.0, leaving the address
    it advertises to the node). ``firewall``: every host drops what the runbook's rules do not
    open first. Returns once every join is in a group.
    """
    if firewall:
        lan.firewall(0, SEED_RULE)
        for i in range(1, lan.hosts):
            lan.firewall(i, NODE_RULE)
    seed_args = [
        *CLI,
        "bootstrap",
        *("--host", lan.addr(0), "--port", str(SEED_PORT)),
        *("--data-dir", str(lan.data_dir("h0"))),
    ]
    seed = lan.spawn(0, "h0-seed", seed_args)
    seed.expect(r"listening on udp", timeout=60)
    n = lan.hosts - 1

    def join(i: int) -> HostProc:
        args = [
            *CLI,
            "join",
            *("-b", f"{lan.addr(0)}:{SEED_PORT}", "--port", str(NODE_PORT)),
            *("--host", "0.0.0.0" if wildcard else lan.addr(i)),
            *("--data-shard", f"{i - 1}/{n}", "--domain", str((i - 1) % domains)),
            *("--data-dir", str(lan.data_dir(f"h{i}")), *join_args),
        ]
        return lan.spawn(i, f"h{i}-join", args)

    joins = [join(1)] if n else []
    if joins:  # joins started together would each found a group of their own
        joins[0].expect(r"(joined|founded) group", timeout=90)
    joins += [join(i) for i in range(2, lan.hosts)]
    for proc in joins:
        proc.expect(r"(joined|founded) group", timeout=90)
    return Network(lan, seed, joins)
