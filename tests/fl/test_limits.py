"""A member trains within its own caps, whatever the leader's train config asks."""

from __future__ import annotations

import math

import pytest

from mycelium_p2p.errors import ConfigError
from mycelium_p2p.fl.limits import Screening, TrainCaps, TrainConfigRefused, bound_train_config


def test_values_over_a_cap_are_lowered_to_it_and_the_rest_pass_as_sent() -> None:
    caps = TrainCaps(max_local_epochs=5, max_batch_size=256, max_learning_rate=0.5)
    sent = {"local-epochs": 1000, "batch-size": 10**9, "lr": 3.0, "proximal-mu": 50.0, "x": "y"}
    bounded = bound_train_config(sent, caps)
    assert bounded == {
        "local-epochs": 5,
        "batch-size": 256,
        "lr": 0.5,
        "proximal-mu": caps.max_proximal_mu,
        "x": "y",
    }
    assert sent["local-epochs"] == 1000  # the leader's record is not changed in place
    within = {"local-epochs": 2, "batch-size": 32, "lr": 0.05, "proximal-mu": 0.0}
    assert bound_train_config(within, caps) == within


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", math.nan),
        ("lr", math.inf),
        ("lr", 0.0),
        ("lr", -0.1),
        ("local-epochs", 0),
        ("local-epochs", -3),
        ("batch-size", -math.inf),
        ("batch-size", "32"),
        ("local-epochs", True),
        ("lr", [0.1]),
        ("proximal-mu", -1.0),
        ("proximal-mu", math.nan),
    ],
)
def test_non_finite_non_positive_or_non_numeric_values_are_refused(key: str, value: object) -> None:
    with pytest.raises(TrainConfigRefused, match=key):
        bound_train_config({key: value}, TrainCaps())


@pytest.mark.parametrize(
    "make",
    [
        lambda: TrainCaps(max_local_epochs=0),
        lambda: TrainCaps(max_learning_rate=math.nan),
        lambda: TrainCaps(max_batch_size=-1),
        lambda: Screening(max_examples=0),
        lambda: Screening(max_update_norm=math.nan),
        lambda: Screening(norm_factor=0.5),  # would drop the larger half of every round
    ],
)
def test_limits_that_make_no_sense_are_a_config_error(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]
