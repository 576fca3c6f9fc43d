"""mycelium-p2p: a peer-to-peer network of federated-learning groups.

``Node`` and ``NodeConfig`` (what ``mycelium-p2p join`` runs) and ``ClientProcess`` (a worker
process for nodes' ClientApps) load Flower (and torch, only for the default digits task), so
they are imported on first use:
``from mycelium_p2p import Node, NodeConfig``.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["ClientProcess", "Node", "NodeConfig", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Node", "NodeConfig"):
        from .node import node

        return getattr(node, name)
    if name == "ClientProcess":
        from .fl.worker import ClientProcess

        return ClientProcess
    raise AttributeError(f"module 'mycelium_p2p' has no attribute {name!r}")
