"""A leader's advert follows its rounds at most once per record interval, ending up current."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mycelium_p2p.dht import publish_advert
from mycelium_p2p.node import node as node_module
from mycelium_p2p.node import publishing
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network


@run_async(timeout=90)
async def test_fast_rounds_publish_few_adverts_and_the_last_round_gets_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[int] = []

    async def counting(dht: Any, record: Any) -> int:
        published.append(record.body.metrics.round)
        return await publish_advert(dht, record)

    monkeypatch.setattr(node_module, "publish_advert", counting)  # start()
    monkeypatch.setattr(publishing, "publish_advert", counting)  # after rounds
    async with learning_network([{"create": "fast", "round_pause": 0.0}]) as (_, node):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await wait_for(lambda: len(node.rounds) >= 20, 60, "20 rounds")
        node.training.clear()  # no more rounds after the one in flight
        elapsed = loop.time() - started
        # start() publishes once; rounds at most once per interval after their first
        assert len(published) <= 2 + elapsed / node.config.group.record_interval, published
        await wait_for(
            lambda: published[-1] == node.rounds[-1].round,
            3 * node.config.group.record_interval,
            "an advert of the last round",
        )


@run_async(timeout=90)
async def test_presence_goes_out_on_a_new_role_at_once_and_not_with_every_heartbeat() -> None:
    from mycelium_p2p.records import record_key, roster_topic

    async with learning_network([{"create": "p"}, {"group": "p"}]) as (seed, leader, member):
        key = record_key(roster_topic(leader.group.group_id))

        async def listed_as(role: str, tries: int) -> bool:
            """Whether the DHT lists the member in ``role`` within ``tries`` polls 0.1 s apart."""
            for _ in range(tries):
                records = await seed.get_records(key)
                mine = [r for r in records if r.signer == member.identity.public_key]
                if mine and mine[0].body.role == role:
                    return True
                await asyncio.sleep(0.1)
            return False

        assert await listed_as("member", 100)
        published: list[str] = []
        put = member.dht.put

        async def counting(record: Any) -> int:
            if record.kind == "heartbeat":
                published.append(record.body.role)
            return await put(record)

        member.dht.put = counting
        await leader.stop()
        await wait_for(lambda: member.group is not None and member.group.is_leader, 30, "election")
        assert await listed_as("leader", 20)  # at once, not at the next refresh
        await asyncio.sleep(6.0)  # 20 heartbeats, more than the old 5 s presence period
        assert published == ["leader"]  # the new role, then nothing until the refresh


def test_group_selects_by_id_or_by_a_name_only_one_group_bears() -> None:
    import pytest

    from mycelium_p2p.errors import ConfigError
    from mycelium_p2p.node.choosing import select_group
    from mycelium_p2p.records import GroupAdvert
    from mycelium_p2p.testing.records import make_advert

    lab, twin, solo = (GroupAdvert.from_record(make_advert(name=n)) for n in ("lab", "lab", "solo"))
    adverts = [lab, twin, solo]
    assert select_group(adverts, twin.group_id) == [twin]
    assert select_group(adverts, "solo") == [solo]
    assert select_group(adverts, "nobody") == []
    with pytest.raises(ConfigError, match="choose one by its id"):
        select_group(adverts, "lab")
