"""The chaos suite's invariant checks, fed with hand-written node events (no processes)."""

from __future__ import annotations

from typing import Any

from tests.helpers.chaos import Invariants, Summary

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
