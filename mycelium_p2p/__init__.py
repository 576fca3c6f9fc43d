"""mycelium-p2p: a peer-to-peer network of federated-learning groups.

``Node`` and ``NodeConfig`` (what ``mycelium-p2p join`` runs) and ``ClientProcess`` (a worker
process for nodes' ClientApps) load Flower (and torch, only for the default digits task), so
they are imported on first use:
``from mycelium_p2p import Node, NodeConfig``.
"""

from ._lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["ClientProcess", "Node", "NodeConfig", "__version__"]

__getattr__ = lazy_exports(
    __name__,
    {"ClientProcess": ".fl.worker", "Node": ".node.node", "NodeConfig": ".node.node"},
)
