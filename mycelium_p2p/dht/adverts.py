"""The group index: every group's advert, found without knowing any group id."""

from __future__ import annotations

import asyncio
import dataclasses

from ..records import GroupAdvert, Record, index_topic, index_topics, record_key
from .listing import ListingMemory
from .node import DhtNode


async def publish_advert(dht: DhtNode, record: Record) -> int:
    """Store a signed advert in its index shard; returns how many peers accepted it."""
    if record.kind != "advert":
        raise ValueError(f"not an advert: {record.kind}")
    return await dht.put(record)


def current_adverts(adverts: list[GroupAdvert]) -> list[GroupAdvert]:
    """One advert per group: the one ahead (``GroupAdvert.rank``), or its end.

    A group's leaders each sign their own advert (an old leader's lingers until it expires),
    so keep the one ahead. A leader that ended its group (led it alone, then left: its last
    advert said 0 members) and then leads another group of the same shard loses that last
    word (one advert per shard and signer is stored), so its new advert repeats it
    (``GroupAdvert.ended``). Such a claim of a term at least that of the group's advert
    ahead (and, for the same term, by the same leader) lists the group as ending again: 0
    members, under the claimant's key, as its own advert did. A claim of term 1 counts only
    from the group's founder, the check an advert's certificate gets; a later term anyone can
    claim, as anyone can forge an advert of a newer term (docs/threat-model.md)."""
    best: dict[str, GroupAdvert] = {}
    for advert in adverts:
        held = best.get(advert.group_id)
        if held is None or advert.rank > held.rank:
            best[advert.group_id] = advert
    ends: dict[str, tuple[int, GroupAdvert]] = {}  # group id -> the highest claim, its carrier
    for carrier in adverts:
        for group_id, term in carrier.ended:
            ahead = best.get(group_id)
            if ahead is None or (term == 1 and carrier.leader_key != ahead.founder):
                continue
            overrules = term > ahead.term or (
                term == ahead.term and carrier.leader_key == ahead.leader_key
            )
            if overrules and (group_id not in ends or term > ends[group_id][0]):
                ends[group_id] = (term, carrier)
    for group_id, (term, carrier) in ends.items():
        best[group_id] = dataclasses.replace(
            best[group_id],
            leader=carrier.leader,
            leader_key=carrier.leader_key,
            term=term,
            metrics=dataclasses.replace(best[group_id].metrics, members=0),
            seq=carrier.seq,
            issued_at=carrier.issued_at,
            expires_at=carrier.expires_at,
            cert=None,
            ended=(),
        )
    return list(best.values())


async def fetch_adverts(
    dht: DhtNode,
    task: str | None = None,
    *,
    timeout: float | None = None,
    memory: ListingMemory | None = None,
) -> list[GroupAdvert]:
    """Every live, verified group advert (optionally for one task), by group name then id.

    Each shard is read as a listing (``read_listing``): from ``listing_quorum`` peers that
    hold adverts, not the first few, since one that restarted lately holds only the adverts
    published since (seen in soak runs). ``timeout``: return by then with what was read (a
    shard read from fewer peers than the quorum), rather than nothing. ``memory``: a reader
    that lists again and again fills a shard read cut short with what its earlier reads
    found and has not expired (``ListingMemory``)."""
    keys = [record_key(t) for t in index_topics()]
    shards = await asyncio.gather(*(dht.read_listing(k, timeout=timeout) for k in keys))
    now = dht.clock()
    records = [
        r
        for key, listing in zip(keys, shards, strict=True)
        for r in (memory.recall(key, listing, now) if memory is not None else listing.records)
    ]
    adverts = current_adverts([GroupAdvert.from_record(r) for r in records if r.kind == "advert"])
    if task is not None:
        adverts = [a for a in adverts if a.task == task]
    return sorted(adverts, key=lambda a: (a.name, a.group_id))


async def fetch_advert(dht: DhtNode, group_id: str) -> GroupAdvert | None:
    """One group's current advert by id, or None if the group is not (or no longer)
    advertised."""
    records = await dht.get_records(record_key(index_topic(group_id)))
    adverts = [GroupAdvert.from_record(r) for r in records if r.kind == "advert"]
    # the whole shard: another group's advert may say this one ended
    mine = [a for a in current_adverts(adverts) if a.group_id == group_id]
    return mine[0] if mine else None
