"""The chaos suite's invariant checks, fed with hand-written node events (no processes)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from mycelium_p2p.testing.chaos import ChaosConfig, ChaosRun, Invariants, Summary
from mycelium_p2p.testing.chaos.config import errors_in

G = "g1"


def feed(*events: dict[str, Any]) -> Summary:
    summary = Summary()
    checks = Invariants(summary)
    for t, event in enumerate(events):
        checks.on_event({"t": float(t), "group_id": G, **event})
    return summary


def lead(peer: str, term: int, base: int, digest: str) -> dict[str, Any]:
    return {"peer": peer, "kind": "leader", "term": term, "round": base, "digest": digest}


def done(peer: str, term: int, rnd: int, digest: str) -> dict[str, Any]:
    return {"peer": peer, "kind": "round", "term": term, "round": rnd, "digest": digest}


def test_a_failover_that_goes_on_from_the_last_round_is_clean() -> None:
    summary = feed(
        lead("a", 1, 0, "00"), done("a", 1, 1, "m1"), done("a", 1, 2, "m2"),
        lead("b", 2, 2, "m2"), done("b", 2, 3, "m3"),
    )  # fmt: skip
    assert summary.violations == [] and summary.rounds_lost == 0
    assert summary.rounds_completed == 3


def test_a_frozen_leader_reporting_late_the_round_its_successor_went_on_from_is_clean() -> None:
    summary = feed(
        done("a", 1, 63, "m63"),
        lead("b", 2, 64, "m64"),  # "a" committed 64, then froze before reporting it
        done("b", 2, 65, "m65"), done("b", 2, 66, "m66"),
        done("a", 1, 64, "m64"),  # woken: the same model, late
    )  # fmt: skip
    assert summary.violations == [] and summary.rounds_lost == 0


def test_a_round_with_two_models_is_a_fork() -> None:
    summary = feed(done("a", 1, 5, "x"), lead("b", 2, 4, "m4"), done("b", 2, 5, "y"))
    assert summary.rounds_lost == 1 and "two models" in summary.violations[0]


def test_rounds_going_back_and_two_leaders_in_a_term_are_caught() -> None:
    summary = feed(done("a", 1, 7, "m7"), done("a", 1, 5, "m5"))
    assert summary.rounds_lost == 1 and "went back" in summary.violations[0]
    summary = feed(lead("a", 2, 0, "00"), lead("b", 2, 0, "00"), done("a", 2, 1, "m"))
    assert any("two leaders" in v for v in summary.violations)


def test_groups_founded_while_cut_off_must_merge_back_after_the_heal(tmp_path: Path) -> None:
    def run_with(*events: tuple[float, str, str, str], deadline: float) -> ChaosRun:
        config = ChaosConfig(workdir=tmp_path, nodes=4, domains=2, capacity=6)
        run = ChaosRun(dataclasses.replace(config, expect_consolidation=True))
        run.nodes = ["n0", "n1", "n2", "n3"]  # domains 0, 1, 0, 1
        run.config.consolidate_deadline = deadline
        run._alive = lambda peer: True  # type: ignore[method-assign]
        for t, peer, kind, gid in events:
            event = {"t": t, "peer": peer, "kind": kind, "group_id": gid}
            run.invariants.on_event(event)
            run._on_event(event)
        return run

    laid_out = [(1.0, "n0", "founded", "g0"), (1.1, "n1", "founded", "g1"),
                (2.0, "n2", "joined", "g0"), (2.1, "n3", "joined", "g1")]  # fmt: skip
    cut_off = [(11.0, "n2", "regroup", "g0"), (12.0, "n2", "founded", "g2")]
    # (event times are long past: the founding window after the heal has closed)

    stuck = run_with(*laid_out, *cut_off, deadline=0.0)
    assert stuck.surplus_groups() == {0: 1}  # domain 0 in g0 and g2; domain 1 only in g1
    assert stuck.group_count() == 3
    stuck._expect_consolidated(cut_at=10.0, healed_at=15.0, before=2)
    stuck._run_checks()
    assert stuck.summary.founded_while_cut == 1
    assert (
        len(stuck.summary.violations) == 1 and "3 groups, 2 before" in stuck.summary.violations[0]
    )

    merged = run_with(*laid_out, *cut_off, (20.0, "n2", "joined", "g0"), deadline=1e12)
    merged._expect_consolidated(cut_at=10.0, healed_at=15.0, before=2)
    merged._run_checks()
    assert merged.summary.violations == [] and merged.checks == []
    assert merged.summary.founded_while_cut == 1

    # a group founded before this cut is counted in what the network had then
    earlier = run_with(*laid_out, *cut_off, deadline=0.0)
    earlier._expect_consolidated(cut_at=13.0, healed_at=15.0, before=3)
    earlier._run_checks()
    assert earlier.summary.violations == [] and earlier.summary.founded_while_cut == 0

    # within the founding window after the heal, nothing is decided yet
    fresh = run_with(*laid_out, deadline=1e12)
    now = time.time()
    fresh._expect_consolidated(cut_at=now - 20, healed_at=now - 1, before=2)
    fresh._run_checks()
    assert len(fresh.checks) == 1 and fresh.summary.violations == []

    # where consolidation is not expected yet, a miss is counted and is no violation
    soft = run_with(*laid_out, *cut_off, deadline=0.0)
    soft.config.expect_consolidation = False
    soft._expect_consolidated(cut_at=10.0, healed_at=15.0, before=2)
    soft._run_checks()
    assert soft.summary.violations == [] and len(soft.summary.goals_missed) == 1


def test_errors_counted_in_a_log_include_unretrieved_future_exceptions() -> None:
    log = (
        "12:00:00 round 3\n"
        "ERROR asyncio: Future exception was never retrieved\n"
        "future: <Future finished exception=ChannelError('connection closed')>\n"
        "Traceback (most recent call last):\n  ...\nValueError: x\n"
    )
    assert errors_in(log) == 2
    assert errors_in("12:00:00 round 3\nclosing silent channel\n") == 0
