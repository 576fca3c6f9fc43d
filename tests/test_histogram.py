"""``Histogram``: fixed buckets, cumulative on read, bounded whatever it is fed."""

from __future__ import annotations

import math

import pytest

from mycelium_p2p.histogram import LATENCY_BUCKETS, ROUND_BUCKETS, Histogram


def test_an_observation_counts_in_the_first_bucket_whose_bound_holds_it() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        hist.observe(value)
    assert hist.cumulative() == [(0.1, 2), (1.0, 4), (math.inf, 5)]
    assert hist.count == 5
    assert hist.sum == pytest.approx(4.65)


def test_odd_values_stay_in_bounds_and_keep_the_sum_finite() -> None:
    hist = Histogram((0.1, 1.0))
    for value in (-2.0, math.nan, math.inf):
        hist.observe(value)
    assert hist.cumulative() == [(0.1, 2), (1.0, 2), (math.inf, 3)]
    assert hist.sum == 0.0
    for _ in range(1000):
        hist.observe(0.5)
    assert len(hist.cumulative()) == 3  # no bucket grows out of what it was fed


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (0.1, math.inf), (math.nan,)])
def test_bounds_must_be_finite_and_increase(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


def test_the_default_buckets_span_what_they_measure() -> None:
    assert LATENCY_BUCKETS[0] == 0.005 and LATENCY_BUCKETS[-1] == 10.0
    assert ROUND_BUCKETS[-1] == 600.0
    assert Histogram().bounds == LATENCY_BUCKETS
