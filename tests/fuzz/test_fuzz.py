"""A short fuzz run of every target: each input refused with a documented error or accepted
valid; no crash, no hang, nothing invalid stored. ``scripts/fuzz.py`` runs the long ones."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from .harness import Context, run_one
from .targets import TARGETS

EXAMPLES = 200


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name: str) -> None:
    target = TARGETS[name]
    ctx = Context()
    seen: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.strategy())
    def fuzz(value: object) -> None:
        verdict = run_one(target, value, ctx)
        seen[verdict.outcome] = seen.get(verdict.outcome, 0) + 1
        if verdict.outcome in ("crash", "hang", "invalid"):
            raise AssertionError(f"{verdict.outcome} on {value!r:.500}") from verdict.error

    try:
        fuzz()
    finally:
        ctx.close()
    assert sum(seen.values()) >= EXAMPLES
