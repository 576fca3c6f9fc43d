"""``Listings``: what a chaos run's observers (``groups --watch --json``) listed, read from
their output as it grows."""

from __future__ import annotations

import json
import time
from pathlib import Path


class Listings:
    """Each observer's latest listing, the groups it lists as ending, and every group ever
    listed; ``read`` takes in the complete lines an observer printed since the last read."""

    def __init__(self) -> None:
        self.listings: dict[str, tuple[float, set[str]]] = {}  # observer -> (time, group ids)
        self.dissolving: dict[str, set[str]] = {}  # observer -> groups listed with 0 members
        self.ever_listed: set[str] = set()  # groups some observer has listed
        self._offset: dict[str, int] = {}

    def read(self, name: str, log_path: Path) -> None:
        """Read observer ``name``'s new output (its log file)."""
        try:
            with open(log_path, "rb") as fh:
                fh.seek(self._offset.get(name, 0))
                chunk = fh.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset[name] = self._offset.get(name, 0) + len(complete)
        for line in complete.splitlines():
            if line.startswith(b"["):
                try:
                    adverts = json.loads(line)
                    listed = {a["group_id"] for a in adverts if a["members"] > 0}
                    ending = {a["group_id"] for a in adverts if a["members"] == 0}
                except (ValueError, KeyError, TypeError):
                    continue
                self.listings[name] = (time.monotonic(), listed)
                self.dissolving[name] = ending  # its leader left alone: it announced its end
                self.ever_listed |= listed
