"""The decision to move: threshold, hysteresis, cooldown, cap; no flapping."""

from __future__ import annotations

from mycelium_p2p.migration.policy import MigrationConfig, MigrationPolicy


def policy(**kw) -> MigrationPolicy:
    return MigrationPolicy(MigrationConfig(**{"cooldown": 10.0, **kw}))


def test_a_clear_gain_confirmed_twice_moves() -> None:
    p = policy()
    assert p.decide(0.60, {"b": 0.90}, now=0).move_to is None  # first sighting: confirm
    decision = p.decide(0.60, {"b": 0.91}, now=1)
    assert decision.move_to == "b" and "better" in decision.reason


def test_gains_within_the_threshold_never_move() -> None:
    p = policy(performance_threshold=0.05)
    for t in range(10):
        assert p.decide(0.80, {"b": 0.84}, now=t).move_to is None


def test_two_equal_groups_do_not_flap() -> None:
    """Scores of two equally good groups jitter around each other: nobody moves back and forth."""
    p = policy(performance_threshold=0.02)
    own, other = "a", "b"
    jitter = [0.01, -0.015, 0.012, -0.01, 0.018, -0.019, 0.005]
    moves = 0
    for t, delta in enumerate(jitter * 5):
        decision = p.decide(0.85, {other: 0.85 + delta}, now=float(t))
        if decision.move_to:
            moves += 1
            p.moved(float(t))
            own, other = other, own
    assert moves == 0


def test_cooldown_and_cap_bound_the_moves() -> None:
    p = policy(confirmations=1, max_moves=2, cooldown=10.0)
    assert p.decide(0.5, {"b": 0.9}, now=0).move_to == "b"
    p.moved(0)
    assert "cooling" in p.decide(0.5, {"c": 0.9}, now=5).reason
    assert p.decide(0.5, {"c": 0.9}, now=11).move_to == "c"
    p.moved(11)
    assert "cap" in p.decide(0.5, {"d": 0.99}, now=100).reason


def test_the_confirmation_streak_resets_when_the_gain_disappears() -> None:
    p = policy()
    p.decide(0.6, {"b": 0.9}, now=0)
    p.decide(0.6, {"b": 0.6}, now=1)  # gone
    assert p.decide(0.6, {"b": 0.9}, now=2).move_to is None  # must confirm again
