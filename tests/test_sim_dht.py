"""scripts/sim_dht.py: a small churned run finds every record, and a seed repeats it; so does
one with hostile peers (a mix and targeted sybils), who really join and are really asked."""

from __future__ import annotations

from typing import Any

from mycelium_p2p.testing import run
from mycelium_p2p.testing.hostile import BEHAVIOURS
from scripts.sim_dht import make_parser, simulate


def sim(seed: int, *extra: str) -> dict[str, Any]:
    argv = ["--peers", "60", "--records", "8", "--duration", "20", "--gets", "20"]
    argv += ["--seed", str(seed), *extra]
    return run(simulate(make_parser().parse_args(argv)))


def test_a_churned_simulation_finds_every_record_and_a_seed_repeats_it() -> None:
    first, again, other = sim(1), sim(1), sim(2)
    assert first["get_success"] == 1.0 and first["gets"] == 20
    assert not first["cut_short"]
    assert 1 <= first["hops_to_record_max"] <= first["hop_bound"]
    assert first["fingerprint"] == again["fingerprint"]
    assert first["get_p50_ms"] == again["get_p50_ms"]
    assert other["fingerprint"] != first["fingerprint"]
    assert "hostile" not in first


HOSTILE = ["--peers", "80", "--hostile", "0.2", "--sybils", "4", "--sybil-targets", "2"]
HOSTILE += ["--sybil-bits", "10", "--gets", "30"]


def test_a_hostile_mix_and_sybils_join_are_asked_and_every_record_is_still_found() -> None:
    first, again = sim(1, *HOSTILE), sim(1, *HOSTILE)
    assert first["fingerprint"] == again["fingerprint"]
    assert first["get_success"] == 1.0 and first["gets"] == 30 and not first["cut_short"]
    assert 0 < first["target_gets"] == first["target_gets_ok"] < 30
    # 16 of the 80 peers (the mix, each behaviour at least twice) and 4 sybils besides
    by = first["hostile_by_behaviour"]
    assert first["hostile"] == 20 and by.pop("targeted_sybil") == 4
    assert sum(by.values()) == 16 and set(by) == set(BEHAVIOURS) and min(by.values()) >= 2
    # every one was asked; all but the droppers (they fail the id proof) sit in honest tables
    assert all(asked > 0 for asked in first["hostile_asked"].values())
    tables = first["hostile_in_tables"]
    assert tables.pop("drop") == 0 and by.pop("drop") == 3
    assert tables == {**by, "targeted_sybil": 4}
    assert first["liars_dropped"] > 0  # the forgers were caught
