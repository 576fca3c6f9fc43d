"""``Histogram``: a bounded count of durations by fixed buckets, for ``/metrics``.

Each owner keeps its own (many nodes may share a process): fixed upper bounds chosen when it
is made, so it never grows whatever it is fed.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise

__all__ = ["LATENCY_BUCKETS", "ROUND_BUCKETS", "Histogram"]

#: Upper bounds (s) for network lookups: 5 ms to 10 s (a lookup's deadline is at most that).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (s) for learning rounds: a tenth of a second to ten minutes.
ROUND_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Histogram:
    """Observations counted by bucket (``value <= bound``; the last bucket is +Inf), with
    their count and sum, as Prometheus reads a histogram."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError("a histogram needs finite bucket bounds")
        if any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"bucket bounds must increase: {list(bounds)}")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation; a negative or NaN one (a clock that stepped) counts as 0."""
        value = value if value > 0.0 else 0.0  # NaN > 0 is False
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value if math.isfinite(value) else 0.0

    @property
    def count(self) -> int:
        return sum(self._counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at most that)`` for each bucket, ending with
        ``(inf, count)``."""
        total, out = 0, []
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            total += n
            out.append((bound, total))
        return out
