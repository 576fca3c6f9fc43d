"""The node's split check: the backoff after a split outlives the leader's stint."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from mycelium_p2p.node.splitting import Splitter


def updates(directions: list[int], seed: int) -> dict[bytes, np.ndarray]:
    """Members' updates along the given axes, with a little noise."""
    rng = np.random.default_rng(seed)
    return {
        bytes([i]): np.eye(50)[d] + 0.04 * rng.normal(size=50) for i, d in enumerate(directions)
    }


def test_a_new_stint_as_leader_keeps_the_groups_recent_splits() -> None:
    """A leader that steps down and wins again (or a new leader on this node) must not start
    the split backoff from zero: that would let a ping-pong go on across elections."""
    group = SimpleNamespace(group_id="g" * 16, is_leader=True)
    spawned: list[Any] = []

    def spawn(coro: Any, name: str = "") -> None:
        coro.close()
        spawned.append(name)

    membership = SimpleNamespace(group=group)
    none: Any = None
    splitter = Splitter(
        bytes([0]),
        SimpleNamespace(split=True),  # type: ignore[arg-type]
        membership,  # type: ignore[arg-type]
        none,
        lambda *a, **k: None,
        SimpleNamespace(spawn=spawn),  # type: ignore[arg-type]
        none,
    )

    def rounds_to_split(stint: Any) -> int:
        before = len(spawned)
        for n in range(1, 50):
            stint(updates([0, 0, 1, 1], seed=n), None)
            if len(spawned) > before:
                return n
        raise AssertionError("never split")

    assert rounds_to_split(splitter.check(group)) == 3
    assert rounds_to_split(splitter.check(group)) == 6  # a new stint
    other = SimpleNamespace(group_id="h" * 16, is_leader=True)
    membership.group = other
    assert rounds_to_split(splitter.check(other)) == 3  # another group
