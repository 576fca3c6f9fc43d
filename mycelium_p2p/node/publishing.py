"""``Publisher``: what a node tells the DHT: its group's signed advert (as leader) and its own
presence record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..aio import loop_time
from ..dht import DhtNode, publish_advert
from ..fl.client import ClientRunner
from ..fl.leader import RoundReport
from ..identity import Identity
from ..records import (
    MAX_ENDED,
    GroupMetrics,
    Record,
    index_topic,
    next_seq,
    roster_topic,
    sign_advert,
    sign_record,
)
from ..records.kinds import MAX_INT64
from .config import NodeConfig
from .membership import Membership


class Publisher:
    """Adverts of the group we lead (with its latest round from ``rounds``) and our presence."""

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig,
        dht: DhtNode,
        membership: Membership,
        runner: ClientRunner,
        rounds: list[RoundReport],
        traffic: Callable[[], tuple[int, int]] = lambda: (0, 0),
    ) -> None:
        """``traffic``: the bytes the node received and sent so far, for its presence."""
        self.identity = identity
        self.traffic = traffic
        self.config = config
        self.dht = dht
        self.membership = membership
        self.runner = runner
        self.rounds = rounds
        self.stale = False  # a round ended since the last advert
        self._advert_seq = 0
        self._presence_seq = 0
        self._ended: dict[str, tuple[int, float]] = {}  # group id -> (term, when we ended it)

    async def refresh(self) -> None:
        """Publish the latest metrics now, then at most once per ``record_interval``: rounds
        can be far faster than anyone reads adverts, and each publication is a lookup and k
        signed stores."""
        while self.stale:
            self.stale = False
            await publish_advert(self.dht, self.advert())
            await asyncio.sleep(self.config.group.record_interval)

    def note_ended(self, group_id: str, term: int) -> None:
        """We led ``group_id`` alone in ``term`` and left it: our next adverts in its shard
        say so while its earlier leaders' adverts may still be stored (``sign_advert``)."""
        now = loop_time()
        self._ended[group_id] = (term, now)
        for gid, (_term, when) in list(self._ended.items()):
            if now - when > self.config.group.advert_ttl:
                del self._ended[gid]

    def ended_in_shard(self, group_id: str) -> list[tuple[str, int]]:
        """The groups we ended lately in ``group_id``'s index shard, newest first."""
        now = loop_time()
        shard = index_topic(group_id)
        recent = sorted(
            (
                (when, gid, term)
                for gid, (term, when) in self._ended.items()
                if gid != group_id
                and index_topic(gid) == shard
                and now - when <= self.config.group.advert_ttl
            ),
            reverse=True,
        )
        return [(gid, term) for _when, gid, term in recent[:MAX_ENDED]]

    def advert(self, members: int | None = None) -> Record:
        """Our group's advert with its latest metrics, signed by us as its proven leader."""
        group = self.membership.group
        assert group is not None and group.cert is not None
        last = self.rounds[-1] if self.rounds else None
        self._advert_seq = next_seq(self._advert_seq, time.time())
        return sign_advert(
            self.identity,
            charter=group.info.charter,
            cert=group.cert,
            address=self.membership.tcp_addr,
            metrics=GroupMetrics(
                accuracy=min(1.0, max(0.0, last.accuracy)) if last else 0.0,
                loss=min(1e9, max(0.0, last.loss)) if last else 0.0,
                round=group.model.round,
                members=min(len(group.roster), group.info.capacity) if members is None else members,
                capacity=group.info.capacity,
            ),
            seq=self._advert_seq,
            now=time.time(),
            ttl=self.config.group.advert_ttl,
            ended=self.ended_in_shard(group.group_id),
        )

    async def presence(self) -> None:
        """A signed presence record in the group's roster key: who is where, in which role,
        and the bytes it received and sent so far.

        Published as soon as the node's group or role changes (checked every second), else
        refreshed every ``presence_interval``; it lives three intervals. Each publication is
        a lookup and k signed stores, so the round it names may be an interval old.
        """
        # at least a second apart; a record lives three intervals, and at most an hour
        interval = min(max(self.config.presence_interval, 1.0), 1200.0)
        published: tuple[str, str, bool] | None = None
        due = 0.0
        while True:
            group = self.membership.group
            if group is not None:
                role = "leader" if group.is_leader else "member"
                now = loop_time()
                failing = self.runner.failures.streak > 0
                if (group.group_id, role, failing) != published or now >= due:
                    self._presence_seq = next_seq(self._presence_seq, time.time())
                    received, sent = self.traffic()
                    body = {
                        "group_id": group.group_id,
                        "addr": list(self.membership.tcp_addr),
                        "role": role,
                        "round": group.model.round,
                        "model_hash": group.model.digest,
                        "app_errors": self.runner.failures.streak,
                        "bytes_in": min(max(received, 0), MAX_INT64),
                        "bytes_out": min(max(sent, 0), MAX_INT64),
                    }
                    record = sign_record(
                        self.identity,
                        "heartbeat",
                        roster_topic(group.group_id),
                        body,
                        seq=self._presence_seq,
                        now=time.time(),
                        ttl=3 * interval,
                    )
                    stored = await self.dht.put(record)
                    published = (group.group_id, role, failing)
                    # nobody took it (a DHT still forming): try again soon
                    due = now + (
                        interval if stored else min(interval, self.config.group.record_interval)
                    )
            await asyncio.sleep(min(1.0, interval))
