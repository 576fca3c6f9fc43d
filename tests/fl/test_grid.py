"""The Grid checks every reply: right member, right message, arrays and metrics that aggregate."""

from __future__ import annotations

import asyncio

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from mycelium_p2p.fl.grid import GroupGrid
from mycelium_p2p.fl.messages import flower_node_id
from mycelium_p2p.fl.task import initial_arrays
from mycelium_p2p.group.transport import ChannelServer, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.loopback import learning_network


def train_message(dst: int) -> Message:
    content = RecordDict({"arrays": initial_arrays(), "config": ConfigRecord({"lr": 0.05})})
    return Message(content=content, dst_node_id=dst, message_type="train")


async def exchange(grid: GroupGrid, dst: int) -> Message:
    (reply,) = await asyncio.to_thread(grid.send_and_receive, [train_message(dst)], timeout=10)
    return reply


@run_async(timeout=90)
async def test_bad_replies_become_errors_and_good_ones_pass() -> None:
    async with learning_network([{"create": "g", "round_pause": 30}, {}]) as (_, leader, member):
        grid = GroupGrid(leader.group, asyncio.get_running_loop(), leader.runner.run)
        ids = set(grid.get_node_ids())
        dst = flower_node_id(member.identity.public_key)
        assert ids == {dst, flower_node_id(leader.identity.public_key)}

        good = await exchange(grid, dst)
        assert good.has_content() and good.metadata.src_node_id == dst
        assert good.content["metrics"]["num-examples"] > 0

        original = member.runner.handle

        async def tamper(change):
            async def handle(group, channel, header, segments):
                reply = await original(group, channel, header, segments)
                return change(reply)

            member.runner.handle = handle
            return await exchange(grid, dst)

        def wrong_id(reply: Reply) -> Reply:
            return Reply({**reply.header, "mid": "someone-else"}, reply.segments)

        def wrong_shapes(reply: Reply) -> Reply:
            content = RecordDict(
                {
                    "arrays": ArrayRecord(numpy_ndarrays=[np.zeros(3)]),
                    "metrics": MetricRecord({"num-examples": 5}),
                }
            )
            from mycelium_p2p.fl.wire import encode_content

            records, segments = encode_content(content)
            return Reply({**reply.header, "records": records}, segments)

        def no_weight(reply: Reply) -> Reply:
            from mycelium_p2p.fl.wire import decode_content, encode_content

            content = decode_content(reply.header["records"], list(reply.segments))
            content["metrics"] = MetricRecord({"train_loss": 1.0})
            records, segments = encode_content(content)
            return Reply({**reply.header, "records": records}, segments)

        def oversized(reply: Reply) -> Reply:  # more than twice the model sent, plus 1 MiB
            sent = sum(len(s) for s in reply.segments)
            return Reply(reply.header, [*reply.segments, bytes(sent + 2**20 + 1)])

        for change, why in [
            (wrong_id, "another message"),
            (wrong_shapes, "differ"),
            (no_weight, "num-examples"),
            (oversized, "refused"),  # unread: the channel closes, the next message dials again
        ]:
            reply = await tamper(change)
            assert reply.has_error(), why
            assert why in reply.error.reason
        member.runner.handle = original

        # a node answering in the member's place (its address, another key) is refused
        async def forge(channel, method, header, segments):
            return Reply({"mid": header.get("mid"), "records": []})

        impostor = ChannelServer(Identity.generate(), forge)
        impostor_addr = await impostor.listen("127.0.0.1", 0)
        try:
            entry = leader.group.roster[member.identity.public_key]
            channel = leader.channels.channel(member.identity.public_key)
            if channel is not None:  # (the oversized reply closed the last one)
                await channel.close()
            entry.addr = impostor_addr
            reply = await exchange(grid, dst)
            assert reply.has_error() and "expected" in reply.error.reason
        finally:
            await impostor.close()


@run_async(timeout=90)
async def test_a_member_leaving_mid_round_does_not_hang_the_strategy() -> None:
    """Flower's strategies count the nodes, then wait (forever) until that many are there. A
    member leaving between the two calls hung the leader: within a round the Grid keeps the
    roster it started with; the departed member answers as unavailable."""
    from flwr.common.constant import ErrorCode

    async with learning_network([{"create": "g", "round_pause": 30}, {}]) as (_, leader, member):
        grid = GroupGrid(leader.group, asyncio.get_running_loop(), leader.runner.run)
        before = set(await asyncio.to_thread(grid.get_node_ids))
        assert len(before) == 2
        leader.group.remove_members({member.identity.public_key})
        assert set(await asyncio.to_thread(grid.get_node_ids)) == before  # the same round
        (reply,) = await asyncio.to_thread(
            grid.send_and_receive, [train_message(flower_node_id(member.identity.public_key))]
        )
        assert reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE
        grid.new_round()
        assert set(grid.get_node_ids()) == {flower_node_id(leader.identity.public_key)}
