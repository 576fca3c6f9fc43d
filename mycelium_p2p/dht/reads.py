"""What a read does with the blobs peers return: verifies each once, and corrects the peers
that returned stale records or none.

A blob that fails verification for its clock (expired, or from the future: honest clocks
differ a little) is only skipped; one that fails otherwise (a forgery) makes its sender a liar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from kademlia.node import Node

from ..errors import RecordError, RecordExpired, RecordFromFuture
from ..records import Record, VerifiedBlobs, verify_record
from .lookup import LookupResult


class BlobCheck:
    """One read's verifier of the blobs under ``key``: each checked once (signature, key
    binding, schema, expiry at ``clock()``), the forged ones remembered."""

    def __init__(
        self, key: bytes, clock: Callable[[], float], skew: float, verified: VerifiedBlobs
    ) -> None:
        self.key = key
        self.clock = clock
        self.skew = skew
        self.verified_blobs = verified  # shared across reads: a blob's signature checked once
        self._checked: dict[bytes, Record | None] = {}
        self._forged: set[bytes] = set()

    def check(self, blob: bytes) -> Record | None:
        """The record in ``blob``, or None if it is not valid (now, under this key)."""
        if blob not in self._checked:
            try:
                self._checked[blob] = verify_record(
                    blob,
                    now=self.clock(),
                    key=self.key,
                    skew=self.skew,
                    verified=self.verified_blobs,
                )
            except (RecordExpired, RecordFromFuture):
                self._checked[blob] = None  # honest clocks differ a little: not a lie
            except RecordError:
                self._checked[blob] = None
                self._forged.add(blob)
        return self._checked[blob]

    def screen(self, blobs: list[bytes]) -> list[bytes] | None:
        """A peer's blobs that are valid; None if any is forged (the peer lies)."""
        valid = [b for b in blobs if self.check(b) is not None]
        return None if any(b in self._forged for b in blobs) else valid


def corrections(
    best: dict[bytes, Record], result: LookupResult, budget: int
) -> Iterator[tuple[Node, bytes]]:
    """The newest records (``best``, by signer) to send to the responders of ``result`` that
    returned stale ones or lacked them, and to the closest peer that returned none: at most
    ``budget`` (node, blob) pairs."""
    if not best:
        return
    holders = set(result.blobs)
    targets = [n for n in result.responders.values() if n.id in holders]
    without = [n for n in result.closest if n.id not in holders][:1]
    for node in [*targets, *without]:
        have = set(result.blobs.get(node.id, ()))
        for record in best.values():
            if record.blob in have:
                continue
            if budget <= 0:
                return
            budget -= 1
            yield node, record.blob
