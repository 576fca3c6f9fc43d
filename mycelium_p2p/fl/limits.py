"""The limits each side of a round holds the other to (plain settings; no Flower imports).

``Screening``: what a leader accepts in a member's reply before any strategy aggregates it
(enforced by ``screening.py`` inside the Grid). ``TrainCaps``: the most work a member lets a
leader ask of it (enforced by ``bound_train_config`` before its ClientApp runs). Both are
``NodeConfig`` fields, so every node sets its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, TrainConfigRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Screening:
    """What a leader accepts from a member, per reply and per round.

    ``max_examples``: the most ``num-examples`` one member may claim. Weighted strategies
    (FedAvg) weigh an update by it, so an unbounded claim hands the whole model to one member;
    a million is far beyond one node's share of any data this runs on. (A claim under the cap
    still dominates FedAvg: hence a default strategy that does not weigh updates.)

    ``norm_factor``: a training reply's update (its weights minus the weights sent) may be at
    most this multiple of the round's median update norm. Honest members run the same
    configuration on data of one kind, so their update norms are of one order (measured on
    the digits task, scripts/bench_poison.py: the largest at most 1.3x the round's median
    with 5 members, 1.5x with 4, 2.6x with 3); a factor-5 outlier is a scaled or broken
    update. The median stays an honest member's value while fewer than half the replies are
    bad, so the attacker the rule is meant to catch cannot drag it (with two members there is
    no majority: the rule then sees the mean of the two, and only the absolute cap bounds an
    update). A bad update under the bound (a sign flip, even x4) is left to the robust
    default strategy.

    ``max_update_norm``: an absolute bound on an update's L2 norm, for rounds where the
    relative rule has no majority to lean on (one or two members, or several colluding):
    no step of SGD on a sane model moves it this far (a digits round moves it by 0.2 to 1.7).
    """

    max_examples: float = 1_000_000
    norm_factor: float = 5.0
    max_update_norm: float = 1_000.0

    def __post_init__(self) -> None:
        _require_positive(self, ("max_examples", "max_update_norm"))
        if not self.norm_factor >= 1:  # below 1, every round drops its larger half
            raise ConfigError(f"screening norm_factor must be >= 1, got {self.norm_factor}")


def _require_positive(limits: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(limits, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(
                f"{type(limits).__name__}.{name} must be a positive number: {value!r}"
            )


@dataclass(frozen=True)
class TrainCaps:
    """The most training a member does for one request, whatever the leader asks.

    A leader can otherwise make members burn hours of CPU (a million local epochs), or wreck
    their own model state; values over a cap are lowered to it, nonsense is refused.
    """

    max_local_epochs: int = 5
    max_batch_size: int = 4096
    max_learning_rate: float = 1.0
    max_proximal_mu: float = 10.0

    def __post_init__(self) -> None:
        _require_positive(self, tuple(self.__dataclass_fields__))

    def bounds(self) -> dict[str, tuple[float, bool]]:
        """Train-config key -> (cap, whether 0 is allowed), for the keys the digits task reads."""
        return {
            "local-epochs": (self.max_local_epochs, False),
            "batch-size": (self.max_batch_size, False),
            "lr": (self.max_learning_rate, False),
            "proximal-mu": (self.max_proximal_mu, True),
        }


def bound_train_config(config: Mapping[str, Any], caps: TrainCaps) -> dict[str, Any]:
    """``config`` with every bounded key at most its cap; ``TrainConfigRefused`` if one is not
    a finite number, or is not positive (``proximal-mu``: negative), or if any other number is
    NaN or infinite. Other keys pass as sent."""
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise TrainConfigRefused(f"train config {key}={value!r} is not finite")
    out = dict(config)
    for key, (cap, zero_ok) in caps.bounds().items():
        if key not in out:
            continue
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainConfigRefused(f"train config {key}={value!r} is not a number")
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            wanted = "non-negative" if zero_ok else "positive"
            raise TrainConfigRefused(f"train config {key}={value!r} is not finite and {wanted}")
        if value > cap:
            log.debug("train config %s=%r lowered to this member's cap %r", key, value, cap)
            out[key] = cap
    return out
