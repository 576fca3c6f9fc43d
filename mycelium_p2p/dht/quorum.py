"""When a read may end: the quorum rules of ``DhtNode.get_records`` over a ``LookupResult``.

A responder counts for every path that reached it (``LookupResult.reached``: the path that
asked it, and each path one of whose own peers named it), never for a path it was not met on.
"""

from __future__ import annotations

from collections.abc import Callable

from ..records import Record, best_per_signer
from .lookup import LookupResult

__all__ = ["agreed", "held"]


def agreed(result: LookupResult, check: Callable[[bytes], Record | None], quorum: int) -> bool:
    """Do ``quorum`` responders, reached by every path, hold all the newest records seen?

    A responder agrees when it returned exactly the newest record of every signer seen so
    far: peers replaying an old version, or missing a record others hold, cannot end the
    lookup before what they lack is seen.
    """
    held = {rid: [r for b in blobs if (r := check(b))] for rid, blobs in result.blobs.items()}
    best = {r.blob for r in best_per_signer(r for rs in held.values() for r in rs).values()}
    agreeing = [
        rid
        for rid, records in held.items()
        if rid not in result.partial and {r.blob for r in records} == best
    ]
    return len(agreeing) >= quorum and _paths(result, agreeing) >= result.paths


def held(result: LookupResult, quorum: int) -> bool:
    """Did ``quorum`` responders, reached by every path, return all their records (a
    listing's rule)? One whose pages came only in part is used, but not counted."""
    whole = [rid for rid in result.blobs if rid not in result.partial]
    return len(whole) >= quorum and _paths(result, whole) >= result.paths


def _paths(result: LookupResult, responders: list[bytes]) -> int:
    """How many paths reached one of ``responders`` or more."""
    return len({p for rid in responders for p in result.reached.get(rid, {result.path_of[rid]})})
