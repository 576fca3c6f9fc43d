"""Federated learning in a group: Flower's Grid over group channels, ClientApps, strategies.

Most of these load Flower, so each is imported on first use:
``from mycelium_p2p.fl import GroupGrid``.
"""

from .._lazy import lazy_exports

__all__ = [
    "STRATEGIES",
    "ClientProcess",
    "ClientRunner",
    "FlowerApp",
    "GroupGrid",
    "RoundReport",
    "Screening",
    "TrainCaps",
    "load_flower_app",
    "make_strategy",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "STRATEGIES": ".strategies",
        "ClientProcess": ".worker",
        "ClientRunner": ".client",
        "FlowerApp": ".app",
        "GroupGrid": ".grid",
        "RoundReport": ".leader",
        "Screening": ".limits",
        "TrainCaps": ".limits",
        "load_flower_app": ".app",
        "make_strategy": ".strategies",
    },
)
