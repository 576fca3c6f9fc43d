"""mycelium-p2p: a peer-to-peer network of federated-learning groups.

``Node`` and ``NodeConfig`` (what ``mycelium-p2p join`` runs; its sections ``GroupSettings``,
``FlSettings``, ``MigrationSettings``) and ``ClientProcess`` (a worker process for nodes'
ClientApps) load Flower (and torch, only for the default digits task), so they are imported on
first use: ``from mycelium_p2p import Node, NodeConfig``.
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"
__all__ = [
    "ClientProcess",
    "FlSettings",
    "GroupSettings",
    "MigrationSettings",
    "Node",
    "NodeConfig",
    "__version__",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "ClientProcess": ".fl.worker",
        "FlSettings": ".node.config",
        "GroupSettings": ".node.config",
        "MigrationSettings": ".node.config",
        "Node": ".node.node",
        "NodeConfig": ".node.config",
    },
)
