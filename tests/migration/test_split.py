"""Splitting by update direction, on synthetic updates."""

from __future__ import annotations

import numpy as np

from mycelium_p2p.migration.split import SplitPolicy, bipartition


def updates(directions: list[int], noise: float = 0.3, seed: int = 0) -> dict[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    axes = np.eye(50)
    return {bytes([i]): axes[d] + noise * rng.normal(size=50) / 7 for i, d in enumerate(directions)}


def test_two_directions_are_found_and_one_is_not_split() -> None:
    part = bipartition(updates([0, 0, 0, 1, 1, 1]))
    assert {frozenset(part.a), frozenset(part.b)} == {
        frozenset(bytes([i]) for i in (0, 1, 2)),
        frozenset(bytes([i]) for i in (3, 4, 5)),
    }
    assert part.gap > 0.5
    assert bipartition(updates([0] * 6)).gap < 0.35


def test_a_group_splits_only_after_repeated_clear_evidence() -> None:
    policy = SplitPolicy(confirmations=3)
    split = [policy.observe(updates([0, 0, 1, 1], seed=s), leader=bytes([0])) for s in range(3)]
    assert split[:2] == [None, None]
    assert split[2] == {bytes([2]), bytes([3])}  # the side without the leader leaves


def test_pure_groups_pairs_and_noise_never_split() -> None:
    policy = SplitPolicy(confirmations=1)
    assert policy.observe(updates([0] * 8), leader=bytes([0])) is None
    assert policy.observe(updates([0, 1]), leader=bytes([0])) is None  # sides of one
    rng = np.random.default_rng(1)
    noise = {bytes([i]): rng.normal(size=50) for i in range(8)}  # converged: updates are noise
    assert policy.observe(noise, leader=bytes([0])) is None


def test_each_recent_split_doubles_the_evidence_the_next_one_needs() -> None:
    """Hysteresis against a split/merge ping-pong: a second split within the window needs
    6 bimodal rounds, a third 12; once the window has passed, 3 again."""
    policy = SplitPolicy(confirmations=3, backoff_window=600.0)

    def rounds_to_split(start: float) -> int:
        for n in range(1, 100):
            if policy.observe(updates([0, 0, 1, 1], seed=n), leader=bytes([0]), now=start + n):
                return n
        raise AssertionError("never split")

    assert rounds_to_split(0.0) == 3
    assert rounds_to_split(10.0) == 6
    assert rounds_to_split(30.0) == 12
    assert rounds_to_split(2000.0) == 3  # the earlier splits are out of the window
