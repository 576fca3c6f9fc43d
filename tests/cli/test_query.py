"""The ``nodes`` listing: one row per node, where its newest presence record puts it."""

from __future__ import annotations

import time

from mycelium_p2p.cli.query import presence_rows
from mycelium_p2p.identity import Identity, node_id_for
from mycelium_p2p.records import GroupAdvert, Record, roster_topic, sign_record
from mycelium_p2p.testing.records import make_advert


def advert(name: str) -> GroupAdvert:
    return GroupAdvert.from_record(make_advert(name=name, members=0))


def presence(node: Identity, group: GroupAdvert, role: str, seq: int) -> Record:
    body = {
        "group_id": group.group_id,
        "addr": ["127.0.0.1", 7000],
        "role": role,
        "round": seq,
        "model_hash": bytes(32),
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
