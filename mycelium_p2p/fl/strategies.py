"""Stock Flower strategies by name, set up so that a group of any size (even one) trains.

Every strategy sees only replies the Grid has screened (screening.py: finite values, a bounded
``num-examples``, no outsized update). The default (``NodeConfig.strategy``) is also robust to
the bad updates screening cannot tell from good ones (a sign-flipped update has an honest
norm): chosen by measurement, see scripts/bench_poison.py. ``fedavg`` stays selectable.

``STRATEGIES`` is plain data, so the CLI lists the names without loading Flower; Flower is
imported when a strategy is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

_SMALL = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}

#: Each name's class in ``flwr.serverapp.strategy`` and its settings (besides ``_SMALL``).
STRATEGIES: dict[str, tuple[str, dict[str, float]]] = {
    "fedavg": ("FedAvg", {}),
    "fedprox": ("FedProx", {"proximal_mu": 0.1}),
    "fedmedian": ("FedMedian", {}),
    "fedtrimmedavg": ("FedTrimmedAvg", {"beta": 0.2}),
    "krum": ("Krum", {"num_malicious_nodes": 0}),
    # tolerates one bad member; averages the 3 updates closest to the others
    "multikrum": ("MultiKrum", {"num_malicious_nodes": 1, "num_nodes_to_select": 3}),
}


def make_strategy(name: str) -> Strategy:
    """A fresh stock strategy: one of ``STRATEGIES``."""
    try:
        class_name, settings = STRATEGIES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}"
        ) from None
    from flwr.serverapp import strategy

    kind: type[Strategy] = getattr(strategy, class_name)
    return kind(**settings, **_SMALL)
