"""Terminal and JSON views of groups."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from ..records import GroupAdvert

_NUMERIC = {"members", "round", "accuracy", "term"}


def groups_table(adverts: list[GroupAdvert]) -> Table:
    """A rich table of adverts: one row per group with its verified metrics."""
    title = f"{len(adverts)} group(s)" if adverts else "no groups advertised yet"
    table = Table(title=title, title_justify="left")
    for column in (
        "group",
        "id",
        "task",
        "policy",
        "members",
        "round",
        "accuracy",
        "leader",
        "term",
    ):
        table.add_column(column, justify="right" if column in _NUMERIC else "left")
    for a in adverts:
        m = a.metrics
        table.add_row(  # names come from the network: plain text, never rich markup
            Text(a.name),
            a.group_id[:8],
            Text(a.task),
            a.policy,
            f"{m.members}/{m.capacity}",
            str(m.round),
            f"{m.accuracy:.1%}",
            f"{a.leader[0]}:{a.leader[1]}",
            str(a.term),
        )
    return table


def nodes_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of nodes: id, group, role, round, address, ClientApp failures in a row,
    bytes received and sent (as each node reports them; blank where it did not)."""
    table = Table(title=f"{len(rows)} node(s)" if rows else "no nodes seen", title_justify="left")
    for column in ("node", "group", "role", "round", "address", "app errors", "in", "out"):
        table.add_column(column, justify="left" if column in ("node", "group", "role") else "right")
    for row in rows:
        errors = row.get("app_errors", 0)
        table.add_row(
            row["node_id"][:12],
            Text(row["group"]),
            row["role"],
            str(row["round"]),
            row["addr"],
            Text(f"{errors} in a row", style="red") if errors else "",
            byte_size(row.get("bytes_in")),
            byte_size(row.get("bytes_out")),
        )
    return table


def byte_size(n: int | None) -> str:
    """``n`` bytes in decimal units to three digits (``"12.3 MB"``); ``""`` for None."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 999.5:
            return f"{n} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} EB"
