"""Groups for tests: a charter founded by a given identity."""

from __future__ import annotations

import time

from mycelium_p2p.group.state import GroupInfo
from mycelium_p2p.identity import Identity
from mycelium_p2p.records.charter import GroupCharter


def info_for(
    founder: Identity, name: str = "g", policy: str = "open", capacity: int = 10
) -> GroupInfo:
    """A new group's facts, founded by ``founder`` (who alone may ``found()`` it)."""
    charter = GroupCharter.found(
        founder, name=name, task="digits", policy=policy, capacity=capacity, now=time.time()
    )
    return GroupInfo(charter)
