"""The DHT: kademlia extended to store only signed, validated records."""

from .adverts import fetch_advert, fetch_adverts, publish_advert
from .node import DhtConfig, DhtNode
from .protocol import MyceliumProtocol, ProtocolStats
from .rtt import RttEstimator
from .storage import RecordStore

__all__ = [
    "DhtConfig",
    "DhtNode",
    "MyceliumProtocol",
    "ProtocolStats",
    "RecordStore",
    "RttEstimator",
    "fetch_advert",
    "fetch_adverts",
    "publish_advert",
]
