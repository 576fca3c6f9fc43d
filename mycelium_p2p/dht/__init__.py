"""The DHT: kademlia extended to store only signed, validated records."""

from .adverts import fetch_advert, fetch_adverts, publish_advert
from .config import DhtConfig
from .listing import Listing, ListingMemory
from .node import DhtNode
from .protocol import MyceliumProtocol
from .rtt import RttEstimator
from .stats import ProtocolStats
from .storage import RecordStore

__all__ = [
    "DhtConfig",
    "DhtNode",
    "Listing",
    "ListingMemory",
    "MyceliumProtocol",
    "ProtocolStats",
    "RecordStore",
    "RttEstimator",
    "fetch_advert",
    "fetch_adverts",
    "publish_advert",
]
