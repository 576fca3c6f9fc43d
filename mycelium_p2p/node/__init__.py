"""The node runtime: processes, signals, seed peers and (later) full learning nodes."""

from .lifecycle import DataDirLock, run_until_signalled
from .seed import dht_client, query_groups, run_seed

__all__ = ["DataDirLock", "dht_client", "query_groups", "run_seed", "run_until_signalled"]
