"""DHT peers on a ``SimNetwork`` in virtual time: a seed makes a run, datagram for datagram."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from mycelium_p2p.identity import Identity
from mycelium_p2p.testing import SimNetwork, run, sim_swarm
from mycelium_p2p.testing.records import make_advert


async def _swarm_run(seed: int, latency: str = "wan") -> tuple[str, list[int], float]:
    """Join 40 peers, put a record, read it from 10; what the run did, and when it ended."""
    network = SimNetwork(seed=seed, latency=latency)
    loop = asyncio.get_running_loop()
    async with sim_swarm(40, network, seed=seed) as nodes:
        record = make_advert(Identity.from_seed(bytes(32)), now=loop.wall_time())
        stored = await nodes[1].put(record)
        for reader in nodes[-10:]:
            assert await reader.get_records(record.key) == [record]
        tables = [node.routing_table_size() for node in nodes]
        assert stored >= 20
        return network.fingerprint(), tables, loop.time()


def test_the_same_seed_makes_the_same_run_and_another_seed_another() -> None:
    first, again, other = (run(_swarm_run(seed)) for seed in (3, 3, 4))
    assert first == again
    assert other[0] != first[0] and other[2] != first[2]


def test_a_wan_run_takes_simulated_time_not_wall_time() -> None:
    began = time.perf_counter()
    _, _, simulated = run(_swarm_run(1, "wan"))
    wall = time.perf_counter() - began
    # 39 joins paced 0.5 s apart in batches of 25, lookups at 20-200 ms round trips
    assert simulated > 1.0
    assert wall < 10.0


def test_the_run_does_not_depend_on_string_hashing() -> None:
    """Sets of ids iterate in hash order, which PYTHONHASHSEED changes from process to process."""
    code = (
        "from mycelium_p2p.testing import run;"
        "from tests.testing.test_swarm import _swarm_run;"
        "print(run(_swarm_run(3))[0])"
    )
    root = Path(__file__).resolve().parents[2]
    prints = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert len(prints) == 1 and len(prints.pop()) == 32
