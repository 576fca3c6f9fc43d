"""Every fuzz target, by name."""

from __future__ import annotations

from .harness import Target
from .targets_dht import TARGETS as DHT
from .targets_files import TARGETS as FILES
from .targets_group import TARGETS as GROUP

TARGETS: dict[str, Target] = {t.name: t for t in (*DHT, *GROUP, *FILES)}
