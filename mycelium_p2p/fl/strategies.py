"""Stock Flower strategies by name, set up so that a group of any size (even one) trains."""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum, Strategy

from ..errors import ConfigError

_SMALL = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "fedavg": lambda: FedAvg(**_SMALL),
    "fedprox": lambda: FedProx(proximal_mu=0.1, **_SMALL),
    "fedmedian": lambda: FedMedian(**_SMALL),
    "fedtrimmedavg": lambda: FedTrimmedAvg(beta=0.2, **_SMALL),
    "krum": lambda: Krum(num_malicious_nodes=0, **_SMALL),
}


def make_strategy(name: str) -> Strategy:
    """A fresh stock strategy: fedavg, fedprox, fedmedian, fedtrimmedavg or krum."""
    try:
        return STRATEGIES[name.lower()]()
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}"
        ) from None
