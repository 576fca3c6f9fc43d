"""Remembered DHT contacts: a restarted node rejoins through the peers it knew, not only seeds.

Seeds are few and restart too; one that comes back knows nobody, and a node that joins
through it then sees only the corner of the network that has found the seed again (its group
listed there and nowhere else). So a node keeps the addresses in its routing table in its data
directory (``contacts.json``, rewritten every ``interval`` s and on a clean stop) and pings
them at start, along with its seeds (``DhtNode.bootstrap(hints=...)``). The file is our own,
but it is still read as untrusted: only IP literals and valid ports, at most ``MAX_CONTACTS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from ..addresses import Address, ip_literal
from ..dht import DhtNode

log = logging.getLogger(__name__)

CONTACTS_FILE = "contacts.json"
MAX_CONTACTS = 64


def load_contacts(data_dir: Path) -> list[Address]:
    """The contacts saved in ``data_dir``; none if the file is missing or unreadable."""
    path = Path(data_dir) / CONTACTS_FILE
    try:
        items = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return []
    out: list[Address] = []
    for item in items if isinstance(items, list) else []:
        if (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and ip_literal(item[0]) is not None
            and isinstance(item[1], int)
            and 0 < item[1] < 65536
        ):
            out.append((item[0], item[1]))
    return out[:MAX_CONTACTS]


def save_contacts(data_dir: Path, contacts: list[Address]) -> None:
    """Write ``contacts`` (the first ``MAX_CONTACTS``) to ``data_dir``, atomically."""
    path = Path(data_dir) / CONTACTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([[h, p] for h, p in contacts[:MAX_CONTACTS]]))
    os.replace(tmp, path)


def remember_contacts(dht: DhtNode, data_dir: Path) -> None:
    """Save ``dht``'s contacts now, unless it knows nobody (a node cut off for a while keeps
    what it knew before)."""
    contacts = dht.contacts()
    if contacts:
        try:
            save_contacts(data_dir, contacts)
        except OSError as exc:
            log.warning("cannot save DHT contacts: %s", exc)


async def keep_contacts(dht: DhtNode, data_dir: Path, interval: float = 30.0) -> None:
    """Save ``dht``'s contacts soon after start, then every ``interval`` s (a killed node
    keeps the last save)."""
    delay = min(5.0, interval)
    while True:
        await asyncio.sleep(delay)
        delay = interval
        remember_contacts(dht, data_dir)
