"""Splitting a group whose members pull its model in different directions.

The known failure of IFCA-style clustering is two data domains stuck in one group: the merged
model is mediocre for both, yet no other group is better for either, so nobody moves. The leader
sees what members cannot: every member's update each round. Members with the same data push the
model the same way; members with different data do not. After each round the leader splits the
members' update vectors in two (2-means on cosine similarity); when the two sides agree inside
far more than across (``gap``) for several rounds in a row, the side without the leader founds a
group of its own, seeded with the current model. From there ordinary migration takes over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Partition:
    """Two sides of a group's members, and how alike their updates are within and across."""

    a: set[bytes]
    b: set[bytes]
    within: float = 0.0  # mean cosine between updates on the same side
    across: float = 0.0  # mean cosine between updates on different sides

    @property
    def gap(self) -> float:
        return self.within - self.across if self.b else 0.0


def bipartition(updates: Mapping[bytes, np.ndarray]) -> Partition:
    """Split the members in two by update direction (2-means on cosine similarity)."""
    keys = sorted(updates)
    if len(keys) < 2:
        return Partition(set(keys), set())
    vectors = np.stack([updates[k].ravel() for k in keys]).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    sim = vectors @ vectors.T
    i, j = np.unravel_index(np.argmin(sim), sim.shape)  # the two most opposed members seed
    side = sim[:, i] >= sim[:, j]
    for _ in range(5):  # a few 2-means steps on the sphere
        if side.all() or not side.any():
            break
        ca, cb = vectors[side].mean(axis=0), vectors[~side].mean(axis=0)
        new = vectors @ ca >= vectors @ cb
        if (new == side).all():
            break
        side = new
    a = {k for k, s in zip(keys, side, strict=True) if s}
    b = set(keys) - a
    if not a or not b:
        return Partition(set(keys), set())
    ia, ib = side.nonzero()[0], (~side).nonzero()[0]

    def mean_off_diagonal(rows: np.ndarray) -> float:
        block = sim[np.ix_(rows, rows)]
        n = len(rows)
        return float((block.sum() - np.trace(block)) / (n * (n - 1))) if n > 1 else 1.0

    within = (mean_off_diagonal(ia) * len(ia) + mean_off_diagonal(ib) * len(ib)) / len(keys)
    return Partition(a, b, within, float(sim[np.ix_(ia, ib)].mean()))


@dataclass
class SplitPolicy:
    """Split only a group that stays clearly bimodal for ``confirmations`` rounds in a row:
    two sides of at least ``min_side`` members, each coherent (``min_within``), far apart.

    Hysteresis: each split this group made in the last ``backoff_window`` seconds doubles the
    rounds of evidence the next one needs (up to 16x). Two domains split once; a group of one
    domain that splits anyway (noise can look bimodal in a big converged group) has its
    offspring merged straight back by consolidation, and without the backoff it would split
    again three rounds later, for ever. ``now`` is the caller's monotonic clock."""

    min_gap: float = 0.35
    min_within: float = 0.2
    min_side: int = 2
    confirmations: int = 3
    backoff_window: float = 600.0
    _streak: int = field(default=0)
    _splits: list[float] = field(default_factory=list)

    def needed(self, now: float) -> int:
        """Rounds of evidence the next split needs."""
        self._splits = [t for t in self._splits if now - t < self.backoff_window]
        doubling: int = 2 ** min(len(self._splits), 4)  # int ** int is typed Any (may be float)
        return self.confirmations * doubling

    def observe(
        self, updates: Mapping[bytes, np.ndarray], leader: bytes, now: float = 0.0
    ) -> set[bytes] | None:
        """The members who should leave (the side without the leader), or None."""
        part = bipartition(updates)
        a, b = part.a, part.b
        if (
            min(len(a), len(b)) < self.min_side
            or part.within < self.min_within
            or part.gap < self.min_gap
        ):
            self._streak = 0
            return None
        self._streak += 1
        if self._streak < self.needed(now):
            return None
        self._streak = 0
        self._splits.append(now)
        return b if leader in a else a
