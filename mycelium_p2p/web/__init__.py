"""A read-only view of the network and of a node: an HTML page, its state as JSON, and
Prometheus metrics, served by the node itself (``join --web``, ``bootstrap --web``,
``mycelium-p2p web``). Loaded on first use: ``from mycelium_p2p.web import WebView``.
"""

from .._lazy import lazy_exports

__all__ = ["WebView"]

__getattr__ = lazy_exports(__name__, {"WebView": ".server"})
