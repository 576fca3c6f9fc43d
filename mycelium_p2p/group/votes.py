"""``VoteJournal``: the votes a member cast, on disk, so that a restart cannot vote twice.

Raft keeps ``votedFor`` on stable storage and writes it before it answers a vote request: a
node that crashes and comes back with its memory empty would otherwise grant a second vote in
a term it already voted in, and two candidates could each count a majority in one term (the
double vote is the only overlap two majorities need). Here a node that rejoins a group after a
restart (same key, same data directory) restores what it voted in that group's recent terms.

One small file per group (``<data-dir>/groups/<group_id>.votes``): a msgpack map from term to
the candidate's public key, the newest ``KEEP`` terms, replaced whole (written to a temporary
file, flushed to disk, renamed over the old one, the rename flushed too), so a crash or a power
cut leaves the old file or the new, and the vote leaves only once the new one is on disk.
(The write runs on the event loop: one fsync per vote cast, and a member casts one only in a
newer term, once its leader's lease has lapsed.)
A file that does not read back as such a map is not trusted: a warning, and nothing restored.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

__all__ = ["KEEP", "VoteJournal"]

log = logging.getLogger(__name__)

KEEP = 8  # terms of votes kept (a member refuses to vote in terms older than these anyway)
_MAX_BYTES = 4096  # a journal is a few hundred bytes; a larger file is not ours
_DECODER = msgspec.msgpack.Decoder(dict[int, bytes])


class VoteJournal:
    """The votes of one member in one group, at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[int, bytes]:
        """The votes recorded before (term -> candidate); empty when there are none or the file
        is not a journal."""
        try:
            with open(self.path, "rb") as fh:
                blob = fh.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the vote journal %s: %s", self.path, exc)
            return {}
        try:
            if len(blob) > _MAX_BYTES:
                raise ValueError(f"over {_MAX_BYTES} bytes")
            votes = _DECODER.decode(blob)
            if any(not 0 < t < 2**63 or len(k) != 32 for t, k in votes.items()):
                raise ValueError("a term or a key out of range")
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning("the vote journal %s is not valid (%s): ignored", self.path, exc)
            return {}
        newest = sorted(votes)[-KEEP:]
        return {t: votes[t] for t in newest}

    def record(self, votes: dict[int, bytes]) -> None:
        """Replace the journal with ``votes`` (the newest ``KEEP`` terms), on disk before this
        returns. Raises ``OSError`` when it cannot: then the vote must not be cast."""
        newest = {t: votes[t] for t in sorted(votes)[-KEEP:]}
        folder = self.path.parent
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            _sync_dir(folder.parent)  # the new folder's name, on disk
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(msgspec.msgpack.encode(newest))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _sync_dir(folder)  # the rename, on disk: else a power cut may bring the old file back


def _sync_dir(path: Path) -> None:
    """Flush a directory's entries to disk (where the system lets a directory be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows: directories cannot be opened; NTFS journals renames
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
