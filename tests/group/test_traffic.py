"""What a node sends and receives on its channels, counted by method, with a bound on names."""

from __future__ import annotations

from typing import Any

from mycelium_p2p.group.channel import _MAX_METHODS
from mycelium_p2p.group.transport import Channel, ChannelServer, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing import SimStreams
from mycelium_p2p.testing.aio import run_async, simulated, wait_for
from mycelium_p2p.testing.loopback import learning_network


async def _echo(channel: Channel, method: str, header: dict[str, Any], segs: list[bytes]) -> Reply:
    return Reply({}, segs)


@simulated(timeout=60)
async def test_both_ends_count_the_same_bytes_by_method_and_keep_them_after_a_close(
    streams: SimStreams,
) -> None:
    a = ChannelServer(Identity.generate(), _echo, streams=streams.host())
    b = ChannelServer(Identity.generate(), _echo, streams=streams.host())
    await a.listen("0.0.0.0", 0)
    b_addr = await b.listen("0.0.0.0", 0)
    key = b.identity.public_key
    try:
        for _ in range(3):
            await a.request(b_addr, key, "g.model", {}, [bytes(10_000)], timeout=5)
        sent, got = a.traffic(), b.traffic()
        assert sent["channels_open"] == got["channels_open"] == 1
        assert sent["bytes_out"] == got["bytes_in"] and sent["bytes_in"] == got["bytes_out"]
        assert 60_000 < sent["bytes_out"] + sent["bytes_in"] < 61_000  # three echoes of 10 kB
        assert set(sent["out_by_method"]) == set(got["in_by_method"]) == {"g.model"}
        channel = a.channel(key)
        assert channel is not None
        await channel.close()
        await wait_for(lambda: b.traffic()["channels_open"] == 0, 5, "b to see the close")
        assert a.traffic()["bytes_out"] == sent["bytes_out"]  # a closed channel still counts
        assert b.traffic()["bytes_in"] == got["bytes_in"]
    finally:
        await a.close()
        await b.close()


@simulated(timeout=60)
async def test_made_up_method_names_add_no_more_than_a_few_keys(streams: SimStreams) -> None:
    a = ChannelServer(Identity.generate(), _echo, streams=streams.host())
    b = ChannelServer(Identity.generate(), _echo, streams=streams.host())
    await a.listen("0.0.0.0", 0)
    b_addr = await b.listen("0.0.0.0", 0)
    try:
        for i in range(200):
            await a.request(b_addr, b.identity.public_key, f"x.{i}", {}, timeout=5)
        names = b.traffic()["in_by_method"]
        assert len(names) <= _MAX_METHODS + 1 and names["other"] > 0  # the names, then "other"
    finally:
        await a.close()
        await b.close()


@run_async(timeout=120)
async def test_a_nodes_status_says_what_it_sent_and_received() -> None:
    async with learning_network([{"create": "g"}, {"group": "g"}]) as (_, leader, member):
        await wait_for(lambda: leader.group.model.round >= 2, 90, "two rounds")
        led, followed = leader.status()["traffic"], member.status()["traffic"]
    assert led["out_by_method"]["fl.msg"] > 0 and followed["in_by_method"]["fl.msg"] > 0
    assert followed["out_by_method"]["g.heartbeat"] > 0
    assert led["dht_bytes_in"] > 0 and led["dht_bytes_out"] > 0
