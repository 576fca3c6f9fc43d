"""The leader's per-reply and per-round checks, on hand-made replies (no network)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from mycelium_p2p.fl.limits import Screening
from mycelium_p2p.fl.messages import leader_message
from mycelium_p2p.fl.npy import from_ndarray
from mycelium_p2p.fl.screening import (
    check_reply,
    check_weight,
    norm_outliers,
    screen_round,
    update_norm,
)

SENT = {"w": np.zeros((3, 4), dtype=np.float32), "b": np.ones(4, dtype=np.float32)}


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    out = ArrayRecord()
    for key, value in arrays.items():
        out[key] = from_ndarray(value)
    return out


def sent_content() -> RecordDict:
    return RecordDict({"arrays": record(SENT)})


def reply_content(step: float = 0.1, weight: object = 100, **changes: np.ndarray) -> RecordDict:
    arrays = {key: value + np.float32(step) for key, value in SENT.items()} | changes
    metrics = MetricRecord({"train_loss": 0.5})
    metrics["num-examples"] = weight  # type: ignore[assignment]
    return RecordDict({"arrays": record(arrays), "metrics": metrics})


@pytest.mark.parametrize("weight", [1e300, math.inf, math.nan, 0, -5, "12", True, None, 1e6 + 1])
def test_num_examples_must_be_a_finite_positive_number_under_the_cap(weight: object) -> None:
    assert check_weight(weight, Screening(max_examples=1e6)) is not None
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):  # what Flower carries
        problem = check_reply(sent_content(), reply_content(weight=weight), "train", Screening())
        assert problem is not None and "num-examples" in problem


@pytest.mark.parametrize("weight", [1, 273, 2.5, 1e6])
def test_plausible_num_examples_pass(weight: float) -> None:
    assert check_weight(weight, Screening(max_examples=1e6)) is None
    assert check_reply(sent_content(), reply_content(weight=weight), "train", Screening()) is None


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"w": np.full((3, 4), np.nan, dtype=np.float32)}, "NaN or infinite"),
        ({"b": np.array([1, np.inf, 1, 1], dtype=np.float32)}, "NaN or infinite"),
        ({"w": np.zeros((3, 4), dtype=np.float64)}, "dtypes"),
        ({"w": np.zeros((4, 3), dtype=np.float32)}, "shapes"),
        ({"extra": np.zeros(2, dtype=np.float32)}, "keys"),
        ({"w": np.full((3, 4), 1e4, dtype=np.float32)}, "over the cap"),
    ],
)
def test_bad_arrays_are_refused(changes: dict[str, np.ndarray], why: str) -> None:
    problem = check_reply(sent_content(), reply_content(**changes), "train", Screening())
    assert problem is not None and why in problem


def test_metrics_must_be_finite_and_evaluate_replies_are_checked_too() -> None:
    reply = reply_content()
    reply["metrics"]["train_loss"] = math.nan
    problem = check_reply(sent_content(), reply, "train", Screening())
    assert problem is not None and "train_loss" in problem
    evaluation = RecordDict({"metrics": MetricRecord({"acc": [0.5, math.inf], "num-examples": 9})})
    assert "acc" in (check_reply(sent_content(), evaluation, "evaluate", Screening()) or "")
    bad_weight = RecordDict({"metrics": MetricRecord({"acc": 0.5, "num-examples": 1e300})})
    assert check_reply(sent_content(), bad_weight, "evaluate", Screening()) is not None


def test_without_screening_only_the_structure_is_checked() -> None:
    nan = {"w": np.full((3, 4), np.nan, dtype=np.float32)}
    assert check_reply(sent_content(), reply_content(weight=1e300, **nan), "train", None) is None
    assert check_reply(sent_content(), reply_content(weight=0), "train", None) is not None


def test_update_norm_is_the_l2_norm_of_reply_minus_sent_over_all_arrays() -> None:
    assert update_norm(sent_content(), reply_content(step=0.5)) == pytest.approx(
        0.5 * 4
    )  # 16 values


def test_an_update_far_above_the_median_is_an_outlier_and_honest_spread_is_not() -> None:
    limits = Screening(norm_factor=5.0)
    assert norm_outliers({0: 1.0, 1: 1.2, 2: 0.9, 3: 1.8, 4: 100.0}, limits).keys() == {4}
    assert norm_outliers({0: 1.0, 1: 1.2, 2: 0.9, 3: 1.8, 4: 4.9}, limits) == {}
    assert norm_outliers({0: 3.0}, limits) == {}  # alone: nothing to compare with
    assert norm_outliers({0: 0.0, 1: 0.0, 2: 2.0}, limits) == {}  # most did not move


def test_screen_round_drops_outliers_and_odd_metric_keys_and_names_them(caplog) -> None:
    steps = [0.1, 0.12, 0.09, 0.11, 10.0]  # the last one is a scaled update
    sent = [leader_message(i + 1, "train", sent_content()) for i in range(5)]
    replies = [
        Message(reply_content(step=step), reply_to=message)
        for step, message in zip(steps, sent, strict=True)
    ]
    replies[2].content["metrics"]["extra"] = 1.0
    names = {i + 1: f"member-{i}" for i in range(5)}
    with caplog.at_level(logging.WARNING, logger="mycelium_p2p.fl.screening"):
        out = screen_round(sent, replies, Screening(), lambda node: names[node])
    assert [r.has_error() for r in out] == [False, False, True, False, True]
    assert "median" in out[4].error.reason and "metric keys" in out[2].error.reason
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "member-4" in logged and "member-2" in logged and "member-0" not in logged
    # the same round unscreened keeps the scaled update (only metric keys still matter)
    unscreened = screen_round(sent, replies, None, lambda node: names[node])
    assert [r.has_error() for r in unscreened] == [False, False, True, False, False]
