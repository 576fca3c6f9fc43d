"""mycelium-p2p: a peer-to-peer network of federated-learning groups."""

__version__ = "0.1.0"
