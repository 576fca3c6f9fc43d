"""The group index: every group's advert, found without knowing any group id."""

from __future__ import annotations

import asyncio

from ..records import GroupAdvert, Record, index_topic, index_topics, record_key
from .listing import ListingMemory
from .node import DhtNode


async def publish_advert(dht: DhtNode, record: Record) -> int:
    """Store a signed advert in its index shard; returns how many peers accepted it."""
    if record.kind != "advert":
        raise ValueError(f"not an advert: {record.kind}")
    return await dht.put(record)


def current_adverts(adverts: list[GroupAdvert]) -> list[GroupAdvert]:
    """One advert per group, and none of a group its last leader ended.

    A group's leaders each sign their own advert (an old leader's lingers until it expires),
    so keep the one ahead (``GroupAdvert.rank``). A leader that ended its group (led it alone,
    then left) and went on to lead another group of the same shard says so in its new advert
    (``GroupAdvert.ended``): the ended group's adverts of earlier terms, and its own of that
    term, are gone with it. A claim of term 1 counts only from the group's founder, the same
    check an advert's certificate gets; a later term can be claimed by anyone, as a forged
    advert of a newer term can (docs/threat-model.md)."""
    ended: dict[str, list[tuple[int, bytes]]] = {}
    for advert in adverts:
        for group_id, term in advert.ended:
            ended.setdefault(group_id, []).append((term, advert.leader_key))

    def is_ended(advert: GroupAdvert) -> bool:
        return any(
            (term > 1 or signer == advert.founder)
            and (advert.term < term or (advert.term == term and advert.leader_key == signer))
            for term, signer in ended.get(advert.group_id, ())
        )

    best: dict[str, GroupAdvert] = {}
    for advert in adverts:
        if is_ended(advert):
            continue
        held = best.get(advert.group_id)
        if held is None or advert.rank > held.rank:
            best[advert.group_id] = advert
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
