"""Whole nodes on a simulated LAN (``testing.simnodes``): a member cut off from its group founds
one of its own, and goes back within 10 s of the heal. No namespaces or root needed;
``scripts/bench_formation.py --partition`` measures the same on network-namespace hosts."""

from __future__ import annotations

import asyncio
from typing import Any

from mycelium_p2p import events
from mycelium_p2p.testing import SimNetwork, SimStreams
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.simnodes import sim_learning_network


@run_async(timeout=240)
async def test_a_member_cut_off_founds_a_group_and_goes_back_within_10_s_of_the_heal() -> None:
    streams = SimStreams(SimNetwork(seed=1))
    common = {"migrate": False, "split": False}
    configs = [
        {"create": "home", "data_shard": "0/3", **common},
        {"group": "home", "data_shard": "1/3", **common},
        {"group": "home", "data_shard": "2/3", **common},
    ]
    seen: list[Any] = []
    try:
        async with sim_learning_network(configs, streams) as (_, home, _member, cut):
            cut.on_event = seen.append
            await wait_for(lambda: len(home.group.roster) == 3, 60, "a group of three")
            home_id, rounds = home.group.group_id, home.group.model.round
            streams.network.partition([cut.config.host])

            def founded() -> bool:
                return cut.group is not None and cut.group.group_id != home_id

            await wait_for(founded, 60, "the cut-off member founding a group")
            await asyncio.sleep(10)  # both sides train on
            assert home.group.model.round > rounds and len(home.group.roster) == 2
            streams.network.heal()
            took = await wait_for(
                lambda: cut.group is not None and cut.group.group_id == home_id, 30, "the return"
            )
            assert took < 10
            await wait_for(lambda: len(home.group.roster) == 3, 10, "three again")
            kinds = [e.kind for e in seen]
            assert events.REGROUP in kinds and events.MERGE in kinds, kinds
    finally:
        await streams.close()
