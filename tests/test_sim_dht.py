"""scripts/sim_dht.py: a small churned run finds every record, and a seed repeats it."""

from __future__ import annotations

from typing import Any

from mycelium_p2p.testing import run
from scripts.sim_dht import make_parser, simulate


def sim(seed: int) -> dict[str, Any]:
    argv = ["--peers", "60", "--records", "8", "--duration", "20", "--gets", "20"]
    argv += ["--seed", str(seed)]
    return run(simulate(make_parser().parse_args(argv)))


def test_a_churned_simulation_finds_every_record_and_a_seed_repeats_it() -> None:
    first, again, other = sim(1), sim(1), sim(2)
    assert first["get_success"] == 1.0 and first["gets"] == 20
    assert not first["cut_short"]
    assert 1 <= first["hops_to_record_max"] <= first["hop_bound"]
    assert first["fingerprint"] == again["fingerprint"]
    assert first["get_p50_ms"] == again["get_p50_ms"]
    assert other["fingerprint"] != first["fingerprint"]
