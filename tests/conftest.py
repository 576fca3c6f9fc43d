"""pytest's own set-up. What tests share lives in ``mycelium_p2p.testing`` (the same helpers
serve the benchmarks and scripts)."""

from __future__ import annotations

import logging

logging.getLogger("kademlia").setLevel(logging.ERROR)
