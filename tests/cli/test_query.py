"""The ``nodes`` listing: one row per node, where its newest presence record puts it."""

from __future__ import annotations

import json
import time

from mycelium_p2p.cli.query import presence_rows
from mycelium_p2p.identity import Identity, node_id_for
from mycelium_p2p.records import GroupAdvert, Record, roster_topic, sign_record
from mycelium_p2p.testing.records import make_advert


def advert(name: str) -> GroupAdvert:
    return GroupAdvert.from_record(make_advert(name=name, members=0))


def presence(node: Identity, group: GroupAdvert, role: str, seq: int, **extra: int) -> Record:
    body = {
        "group_id": group.group_id,
        "addr": ["127.0.0.1", 7000],
        "role": role,
        "round": seq,
        "model_hash": bytes(32),
        **extra,
    }
    topic = roster_topic(group.group_id)
    return sign_record(node, "heartbeat", topic, body, seq=seq, now=time.time(), ttl=90)


def test_a_node_that_moved_is_listed_once_in_its_newer_group() -> None:
    old, new = advert("old"), advert("new")
    mover, stayer = Identity.generate(), Identity.generate()
    rows = presence_rows(
        [
            (old, [presence(mover, old, "leader", 5), presence(stayer, old, "member", 3)]),
            (new, [presence(mover, new, "member", 9)]),
        ]
    )
    where = {row["node_id"]: (row["group"], row["role"]) for row in rows}
    assert where == {
        node_id_for(mover.public_key).hex(): ("new", "member"),
        node_id_for(stayer.public_key).hex(): ("old", "member"),
    }


def test_group_names_from_the_network_are_shown_as_text_not_markup() -> None:
    from rich.console import Console

    from mycelium_p2p.cli.render import groups_table

    console = Console(record=True, width=200, color_system=None)
    console.print(groups_table([advert("[red]owned[/red]")]))
    assert "[red]owned[/red]" in console.export_text()


def test_rows_carry_each_nodes_reported_traffic_and_none_from_older_nodes() -> None:
    from rich.console import Console

    from mycelium_p2p.cli.render import nodes_table

    group = advert("lab")
    new, old = Identity.generate(), Identity.generate()
    rows = presence_rows(
        [
            (
                group,
                [
                    presence(new, group, "leader", 2, bytes_in=12_345_678, bytes_out=2**63 - 1),
                    presence(old, group, "member", 2),  # a heartbeat of an earlier version
                ],
            )
        ]
    )
    traffic = {row["node_id"]: (row["bytes_in"], row["bytes_out"]) for row in rows}
    assert traffic == {
        node_id_for(new.public_key).hex(): (12_345_678, 2**63 - 1),
        node_id_for(old.public_key).hex(): (None, None),
    }
    assert json.loads(json.dumps(rows)) == rows  # what ``nodes --json`` prints
    console = Console(record=True, width=200, color_system=None)
    console.print(nodes_table(rows))
    text = console.export_text()
    assert "12.3 MB" in text and "9.22 EB" in text


def test_byte_sizes_read_in_decimal_units() -> None:
    from mycelium_p2p.cli.render import byte_size

    assert [byte_size(n) for n in (None, 0, 999, 1000, 1234, 999_500, 12_345_678)] == [
        "",
        "0 B",
        "999 B",
        "1 kB",
        "1.23 kB",
        "1 MB",
        "12.3 MB",
    ]
