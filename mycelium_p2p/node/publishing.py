"""What a node tells the DHT: its group's signed advert (as leader) and its own presence."""

from __future__ import annotations

import asyncio
import time

from ..dht import DhtNode, publish_advert
from ..fl.leader import RoundReport
from ..group.member import GroupMember
from ..group.state import Address
from ..identity import Identity
from ..records import GroupMetrics, Record, next_seq, roster_topic, sign_advert, sign_record
from .config import NodeConfig


class PublishingMixin:
    """Adverts and presence records, for ``Node``."""

    # attributes provided by Node
    config: NodeConfig
    dht: DhtNode
    identity: Identity
    group: GroupMember | None
    rounds: list[RoundReport]
    tcp_addr: Address
    _advert_stale: bool
    _advert_seq: int
    _heartbeat_seq: int

    async def _refresh_advert(self) -> None:
        """Publish the latest metrics now, then at most once per ``record_interval``: rounds
        can be far faster than anyone reads adverts, and each publication is a lookup and k
        signed stores."""
        while self._advert_stale:
            self._advert_stale = False
            await publish_advert(self.dht, self._advert())
            await asyncio.sleep(self.config.record_interval)

    def _advert(self, members: int | None = None) -> Record:
        """Our group's advert with its latest metrics, signed with the group key."""
        group = self.group
        assert group is not None
        last = self.rounds[-1] if self.rounds else None
        self._advert_seq = next_seq(self._advert_seq, time.time())
        return sign_advert(
            group.info.key,
            name=group.info.name,
            task=group.info.task,
            leader=self.tcp_addr,
            leader_key=self.identity.public_key,
            term=group.term,
            policy=group.info.policy,
            metrics=GroupMetrics(
                accuracy=min(1.0, max(0.0, last.accuracy)) if last else 0.0,
                loss=max(0.0, last.loss) if last else 0.0,
                round=group.model.round,
                members=min(len(group.roster), group.info.capacity) if members is None else members,
                capacity=group.info.capacity,
            ),
            seq=self._advert_seq,
            now=time.time(),
            ttl=self.config.advert_ttl,
        )

    async def _publish_presence(self) -> None:
        """A signed heartbeat in the group's roster key: who is where, in which role."""
        interval = self.config.record_interval
        while True:
            group = self.group
            if group is not None:
                self._heartbeat_seq = next_seq(self._heartbeat_seq, time.time())
                body = {
                    "group_id": group.group_id,
                    "addr": list(self.tcp_addr),
                    "role": "leader" if group.is_leader else "member",
                    "round": group.model.round,
                    "model_hash": group.model.digest,
                }
                record = sign_record(
                    self.identity,
                    "heartbeat",
                    roster_topic(group.group_id),
                    body,
                    seq=self._heartbeat_seq,
                    now=time.time(),
                    ttl=3 * interval,
                )
                await self.dht.put(record)
            await asyncio.sleep(interval)
