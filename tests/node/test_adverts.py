"""A leader's advert follows its rounds at most once per record interval, ending up current."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mycelium_p2p.dht import publish_advert
from mycelium_p2p.node import node as node_module
from mycelium_p2p.node import publishing
from tests.conftest import learning_network, run_async, wait_for


@run_async(timeout=90)
async def test_fast_rounds_publish_few_adverts_and_the_last_round_gets_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[int] = []

    async def counting(dht: Any, record: Any) -> int:
        published.append(record.body["metrics"]["round"])
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
        assert len(published) <= 2 + elapsed / node.config.record_interval, published
        await wait_for(
            lambda: published[-1] == node.rounds[-1].round,
            3 * node.config.record_interval,
            "an advert of the last round",
        )
