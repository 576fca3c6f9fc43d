"""Terminal and JSON views of groups."""

from __future__ import annotations

import time

from rich.table import Table

from ..records import GroupAdvert


def groups_table(adverts: list[GroupAdvert], now: float | None = None) -> Table:
    """A rich table of adverts: one row per group with its verified metrics."""
    now = time.time() if now is None else now
    title = f"{len(adverts)} group(s)" if adverts else "no groups advertised yet"
    table = Table(title=title, title_justify="left")
    for column in ("group", "id", "task", "policy", "members", "round", "accuracy", "loss"):
        table.add_column(column, justify="right" if column in {"members", "round"} else "left")
    table.add_column("leader")
    table.add_column("expires", justify="right")
    for a in adverts:
        m = a.metrics
        table.add_row(
            a.name,
            a.group_id,
            a.task,
            a.policy,
            f"{m.members}/{m.capacity}",
            str(m.round),
            f"{m.accuracy:.1%}",
            f"{m.loss:.3f}",
            f"{a.leader[0]}:{a.leader[1]} (term {a.term})",
            f"{max(0.0, a.expires_at - now):.0f}s",
        )
    return table
