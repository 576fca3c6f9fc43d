"""The group index: one current advert per group, and none of a group its last leader ended."""

from __future__ import annotations

import itertools
import time

import pytest

from mycelium_p2p.dht import fetch_advert, fetch_adverts
from mycelium_p2p.dht.adverts import current_adverts
from mycelium_p2p.errors import MalformedRecord
from mycelium_p2p.identity import Identity
from mycelium_p2p.records import (
    MAX_ENDED,
    GroupAdvert,
    GroupMetrics,
    Record,
    index_topic,
    sign_advert,
    verify_record,
)
from mycelium_p2p.records.charter import GroupCharter
from mycelium_p2p.records.leadership import LeaderCert, founding_cert, sign_vote
from mycelium_p2p.testing.aio import run_async
from mycelium_p2p.testing.loopback import swarm


def charter_in(shard: str | None, founder: Identity, prefix: str = "g") -> GroupCharter:
    """A new group founded by ``founder`` whose index topic is ``shard`` (any when None)."""
    for i in itertools.count():
        charter = GroupCharter.found(
            founder, name=f"{prefix}{i}", task="digits", now=1.7e9, nonce=i.to_bytes(8, "big")
        )
        if shard is None or index_topic(charter.group_id) == shard:
            return charter
    raise AssertionError("unreachable")


def self_cert(leader: Identity, group_id: str, term: int) -> LeaderCert:
    """A certificate of ``term`` holding only its leader's own vote (what a reader can check)."""
    vote = sign_vote(leader, group_id, term, leader.public_key)
    return LeaderCert(group_id, term, leader.public_key, [(leader.public_key, vote)])


def advert(
    leader: Identity,
    charter: GroupCharter,
    *,
    term: int = 1,
    members: int = 3,
    seq: int = 1,
    ended: list[tuple[str, int]] | None = None,
) -> Record:
    cert = (
        founding_cert(leader, charter.group_id)
        if term == 1
        else self_cert(leader, charter.group_id, term)
    )
    return sign_advert(
        leader,
        charter=charter,
        cert=cert,
        address=("127.0.0.1", 9000),
        metrics=GroupMetrics(accuracy=0.5, loss=1.0, round=4, members=members, capacity=10),
        seq=seq,
        now=time.time(),
        ttl=60.0,
        ended=ended or [],
    )


def view(*records: Record) -> list[GroupAdvert]:
    return current_adverts([GroupAdvert.from_record(r) for r in records])


def test_an_advert_names_the_groups_of_its_shard_its_leader_ended() -> None:
    leader = Identity.generate()
    mine = charter_in(None, leader)
    shard = index_topic(mine.group_id)
    gone = charter_in(shard, Identity.generate(), prefix="gone")
    record = verify_record(advert(leader, mine, ended=[(gone.group_id, 3)]).blob, now=time.time())
    assert GroupAdvert.from_record(record).ended == ((gone.group_id, 3),)
    assert (
        GroupAdvert.from_record(verify_record(advert(leader, mine).blob, now=time.time())).ended
        == ()
    )


@pytest.mark.parametrize("case", ["own group", "other shard", "twice", "too many"])
def test_an_advert_cannot_end_its_own_group_another_shards_or_too_many(case: str) -> None:
    leader = Identity.generate()
    mine = charter_in(None, leader)
    shard = index_topic(mine.group_id)
    other_shard = next(s for s in (f"groups/{i}" for i in range(4)) if s != shard)
    same = [charter_in(shard, leader, prefix=f"s{i}-").group_id for i in range(MAX_ENDED + 1)]
    ended = {
        "own group": [(mine.group_id, 1)],
        "other shard": [(charter_in(other_shard, leader).group_id, 2)],
        "twice": [(same[0], 2), (same[0], 3)],
        "too many": [(gid, 2) for gid in same],
    }[case]
    with pytest.raises(MalformedRecord):
        advert(leader, mine, ended=ended)


def listed(*records: Record) -> dict[str, GroupAdvert]:
    return {a.group_id: a for a in view(*records)}


def test_a_claimed_end_lists_the_group_as_ending_again_under_its_claimant() -> None:
    founder, second, last, later = (Identity.generate() for _ in range(4))
    group = charter_in(None, founder, prefix="ended")
    gid = group.group_id
    new = charter_in(index_topic(gid), last, prefix="new")
    term1 = advert(founder, group, term=1)
    term2 = advert(second, group, term=2)
    closing = advert(last, group, term=3, members=0)
    moved_on = advert(last, new, ended=[(gid, 3)])

    assert listed(term1, term2, closing)[gid].metrics.members == 0
    ending = listed(term1, term2, moved_on)[gid]  # the closing advert was replaced
    assert ending.metrics.members == 0 and ending.term == 3
    assert ending.leader_key == last.public_key and ending.cert is None
    assert (
        ending.name == "ended0"
        and ending.expires_at == GroupAdvert.from_record(moved_on).expires_at
    )
    # a newer term than the one ended (the group lived on elsewhere) still shows
    assert listed(term1, advert(later, group, term=4), moved_on)[gid].metrics.members == 3
    # a different leader's advert of the same term is not the ender's to overrule
    assert listed(advert(later, group, term=3), moved_on)[gid].metrics.members == 3
    # a claim about a group nobody advertises lists nothing
    assert set(listed(moved_on)) == {new.group_id}


def test_term_one_can_be_ended_only_by_the_founder() -> None:
    founder, stranger = Identity.generate(), Identity.generate()
    group = charter_in(None, founder, prefix="victim")
    gid = group.group_id
    shard = index_topic(gid)
    founder_moved_on = advert(founder, charter_in(shard, founder, prefix="next"), ended=[(gid, 1)])
    stranger_claim = advert(stranger, charter_in(shard, stranger), ended=[(gid, 1)])
    live = advert(founder, group, term=1, seq=1)
    assert listed(live, stranger_claim)[gid].metrics.members == 3
    # the founder's own claim holds even though it is a different record of the same signer
    assert listed(live, founder_moved_on)[gid].metrics.members == 0


@run_async(timeout=60)
async def test_a_group_its_last_leader_ended_stays_ending_when_that_leader_leads_again() -> None:
    """Seen in the soak: storing peers keep one advert per shard and signer, so a leader that
    ended its group and then led another of the same shard replaced its "0 members" advert,
    and the dead group came back from its first leader's advert until that expired."""
    founder, last = Identity.generate(), Identity.generate()
    group = charter_in(None, founder, prefix="dead")
    shard = index_topic(group.group_id)
    new = charter_in(shard, last, prefix="new")
    async with swarm(8) as nodes:
        writer, reader = nodes[2], nodes[6]
        await writer.put(advert(founder, group, term=1, members=3))
        await writer.put(advert(last, group, term=2, members=0, seq=1))
        listed = {a.group_id: a for a in await fetch_adverts(reader)}
        assert listed[group.group_id].metrics.members == 0  # listed as ending

        await writer.put(advert(last, new, seq=2))  # no word of the group it ended
        listed = {a.group_id: a for a in await fetch_adverts(reader)}
        assert listed[group.group_id].metrics.members == 3  # back from the dead: the flaw

        await writer.put(advert(last, new, seq=3, ended=[(group.group_id, 2)]))
        listed = {a.group_id: a for a in await fetch_adverts(reader)}
        assert listed[group.group_id].metrics.members == 0  # ending again, as it said
        assert listed[group.group_id].leader_key == last.public_key
        ending = await fetch_advert(reader, group.group_id)
        assert ending is not None and ending.metrics.members == 0
        assert await fetch_advert(reader, new.group_id) is not None
