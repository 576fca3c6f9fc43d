"""Stock Flower strategies by name, set up so that a group of any size (even one) trains.

Every strategy sees only replies the Grid has screened (screening.py: finite values, a bounded
``num-examples``, no outsized update). The default (``NodeConfig.strategy``) is also robust to
the bad updates screening cannot tell from good ones (a sign-flipped update has an honest
norm): chosen by measurement, see scripts/bench_poison.py. ``fedavg`` stays selectable.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.serverapp.strategy import (
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from ..errors import ConfigError

_SMALL = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}

STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "fedavg": lambda: FedAvg(**_SMALL),
    "fedprox": lambda: FedProx(proximal_mu=0.1, **_SMALL),
    "fedmedian": lambda: FedMedian(**_SMALL),
    "fedtrimmedavg": lambda: FedTrimmedAvg(beta=0.2, **_SMALL),
    "krum": lambda: Krum(num_malicious_nodes=0, **_SMALL),
    # tolerates one bad member; averages the 3 updates closest to the others
    "multikrum": lambda: MultiKrum(num_malicious_nodes=1, num_nodes_to_select=3, **_SMALL),
}


def make_strategy(name: str) -> Strategy:
    """A fresh stock strategy: one of ``STRATEGIES``."""
    try:
        return STRATEGIES[name.lower()]()
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}"
        ) from None
