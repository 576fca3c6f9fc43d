"""Leadership must be proven: attacks by a LAN stranger and by a malicious member, over real
sockets against real nodes, each asserting what happened (who leads, what was stored, whether
anyone trained), not only that a request was refused."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest
from flwr.app import ConfigRecord, RecordDict

from mycelium_p2p.dht import fetch_adverts, publish_advert
from mycelium_p2p.fl.messages import flower_node_id, leader_message
from mycelium_p2p.fl.wire import encode_content
from mycelium_p2p.group.transport import Channel, ChannelServer, RemoteError, Reply
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import GroupMetrics, sign_advert
from mycelium_p2p.records.leadership import LeaderCert, sign_vote
from mycelium_p2p.testing.aio import run_async, wait_for
from mycelium_p2p.testing.loopback import learning_network

THREE = [{"data_shard": f"{i}/3", "split": False, "migrate": False} for i in range(3)]


def roles(nodes: list[Any]) -> tuple[Any, list[Any]]:
    (leader,) = [n for n in nodes if n.group.is_leader]
    return leader, [n for n in nodes if n is not leader]


def sybil_cert(gid: str, term: int, claimant: Identity, extra: int) -> LeaderCert:
    """A certificate a usurper can make: its own vote plus ``extra`` keys made up for it."""
    voters = [claimant, *(Identity.generate() for _ in range(extra))]
    votes = [(v.public_key, sign_vote(v, gid, term, claimant.public_key)) for v in voters]
    return LeaderCert(gid, term, claimant.public_key, votes)


def _byte_values(value: Any) -> list[bytes]:
    """Every bytes value in a decoded msgpack structure."""
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, dict):
        return [b for k, v in value.items() for b in _byte_values(k) + _byte_values(v)]
    if isinstance(value, (list, tuple)):
        return [b for v in value for b in _byte_values(v)]
    return []


def state(node: Any) -> tuple[Any, ...]:
    g = node.group
    return (g.group_id, g.leader_key, g.term, g.is_leader)


@run_async(timeout=120)
async def test_no_reply_ever_carries_a_private_key() -> None:
    async with learning_network(THREE) as (seed, *nodes):
        leader, _ = roles(nodes)
        secrets = [n.identity.private_bytes() for n in nodes]
        seen: list[bytes] = []  # every byte sent in a reply
        headers: list[Any] = []
        methods: set[str] = set()

        def recording(handle: Any) -> Any:
            async def wrapped(channel: Channel, method: str, header: dict, segs: list) -> Reply:
                reply = await handle(channel, method, header, segs)
                methods.add(method)
                headers.append(reply.header)
                seen.append(msgpack.packb(reply.header))
                seen.extend(bytes(s) for s in reply.segments)
                return reply

            return wrapped

        for node in nodes:  # every g.* answer of every node, from now on
            node.group.handle = recording(node.group.handle)
        handler = leader.channels.handler
        stranger = ChannelServer(Identity.generate(), handler)
        try:
            gid = leader.group.group_id
            for method in ("g.join", "g.leader", "g.model"):
                header = {"gid": gid, "addr": ["127.0.0.1", 9], "invite": ""}
                if method != "g.join":
                    header = {"gid": gid}
                await stranger.request(
                    leader.tcp_addr, leader.identity.public_key, method, header, timeout=5
                )
            kinds = {"g.join", "g.leader", "g.model", "g.heartbeat", "g.commit", "g.roster"}
            await wait_for(lambda: kinds <= methods, 60, f"replies to {sorted(kinds)}")
        finally:
            await stranger.close()
        assert not [s for s in secrets for blob in seen if s in blob]
        # nor any other signing key: no 32 bytes sent are the seed of a key the network uses
        values = {v for header in headers for v in _byte_values(header)}
        public = {n.identity.public_key for n in nodes} | {
            a.leader_key for a in await fetch_adverts(seed)
        }
        public |= {v for v in values if len(v) == 32}
        leaked = [v for v in values if len(v) == 32 and Identity.from_seed(v).public_key in public]
        assert leaked == []


@run_async(timeout=120)
async def test_a_stranger_cannot_make_a_member_train_or_take_its_lead() -> None:
    async with learning_network(THREE) as (_, *nodes):
        leader, (member, _) = roles(nodes)
        calls: list[int] = []
        run = member.runner.run

        async def counting(message: Any, batch: str = "") -> Any:
            if message.metadata.message_id == "x":  # the stranger's, not the real leader's
                calls.append(1)
            return await run(message, batch)

        member.runner.run = counting
        before = state(member)
        gid = member.group.group_id
        stranger_id = Identity.generate()
        stranger = ChannelServer(stranger_id, leader.channels.handler)
        message = leader_message(
            flower_node_id(member.identity.public_key),
            "train",
            RecordDict({"config": ConfigRecord({"local-epochs": 50})}),
        )
        records, segments = encode_content(message.content)
        try:
            for term in (member.group.term, member.group.term + 1, 2**40):
                cert = sybil_cert(gid, term, stranger_id, extra=5).encode()
                header = {
                    "gid": gid,
                    "term": term,
                    "cert": cert,
                    "mid": "x",
                    "type": "train",
                    "records": records,
                }
                with pytest.raises(RemoteError):
                    await stranger.request(
                        member.tcp_addr,
                        member.identity.public_key,
                        "fl.msg",
                        header,
                        segments,
                        timeout=5,
                    )
        finally:
            await stranger.close()
        assert calls == []  # its ClientApp never ran for the stranger
        assert state(member) == before and leader.group.is_leader


@run_async(timeout=150)
async def test_a_malicious_member_cannot_depose_usurp_or_rewrite_history() -> None:
    async with learning_network(THREE) as (_, *nodes):
        leader, (honest, rogue) = roles(nodes)
        await wait_for(lambda: len(leader.rounds) >= 2, 60, "2 rounds")
        await wait_for(lambda: all(len(n.group.roster) == 3 for n in nodes), 10, "full rosters")
        gid, term = leader.group.group_id, leader.group.term
        me = rogue.identity
        forged = sybil_cert(gid, term + 5, me, extra=3).encode()
        own = sybil_cert(gid, term + 5, me, extra=0).encode()
        before_round = honest.group.model.round
        channels = rogue.channels
        attempts = [
            (honest, "g.announce", {"term": term + 5, "addr": list(rogue.tcp_addr), "cert": own}),
            (
                honest,
                "g.announce",
                {"term": term + 5, "addr": list(rogue.tcp_addr), "cert": forged},
            ),
            (
                honest,
                "g.commit",
                {
                    "term": term + 5,
                    "cert": forged,
                    "round": 10**6,
                    "digest": bytes(32),
                    "content": {"w": 1},
                    "proof": b"",
                },
            ),
            (
                honest,
                "g.roster",
                {"term": term + 5, "cert": forged, "roster": [], "rv": [term + 5, 1]},
            ),
            (
                honest,
                "g.redirect",
                {
                    "term": term + 5,
                    "cert": forged,
                    "addr": list(rogue.tcp_addr),
                    "key": me.public_key,
                },
            ),
            (honest, "g.resign", {"term": term}),
            (honest, "n.split", {"term": term, "found": "mine"}),
        ]
        for target, method, header in attempts:
            code = await _refused_or_ignored(channels, target, method, {"gid": gid, **header})
            assert code in ("unproven", "not-leader", "ignored"), (method, code)
        # heartbeats claiming a huge term no longer make the leader step down
        await channels.request(
            leader.tcp_addr,
            leader.identity.public_key,
            "g.heartbeat",
            {"gid": gid, "term": 2**40, "round": 10**6, "addr": list(rogue.tcp_addr)},
            timeout=5,
        )
        await asyncio.sleep(1.0)
        assert leader.group.is_leader and leader.group.term == term
        assert honest.group.leader_key == leader.identity.public_key
        assert honest.group.term == term and honest.group.group_id == gid
        assert before_round <= honest.group.model.round < 10**6
        done = len(leader.rounds)
        await wait_for(lambda: len(leader.rounds) >= done + 2, 60, "rounds go on")
        assert leader.rounds[-1].term == term


async def _refused_or_ignored(channels: ChannelServer, node: Any, method: str, header: dict) -> str:
    """The refusal code, or "ignored" when the node answered but changed nothing (checked by
    the caller)."""
    try:
        await channels.request(node.tcp_addr, node.identity.public_key, method, header, timeout=5)
    except RemoteError as exc:
        return exc.code
    return "ignored"


@run_async(timeout=150)
async def test_a_forged_advert_of_a_newer_term_does_not_redirect_the_group() -> None:
    configs = [{**c, "heartbeat_interval": 0.3} for c in THREE]
    async with learning_network(configs) as (seed, *nodes):
        leader, members = roles(nodes)
        group = leader.group
        gid, term = group.group_id, group.term
        usurper = Identity.generate()
        cert = sybil_cert(gid, term + 100, usurper, extra=9)
        lie = sign_advert(
            usurper,
            charter=group.info.charter,
            cert=cert,
            address=("127.0.0.1", 9),
            metrics=GroupMetrics(0.99, 0.01, 10**6, 3, group.info.capacity),
            seq=2**50,
            now=time.time(),
            ttl=120,
        )
        assert await publish_advert(seed, lie) > 0
        await asyncio.sleep(2 * leader.config.group.record_interval + 1)  # two rival checks
        assert leader.group is group and group.is_leader and group.term == term
        assert all(m.group.leader_key == leader.identity.public_key for m in members)
