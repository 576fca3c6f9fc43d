"""``Splitter``: a group whose members' updates disagree splits in two (``migration.split``
decides), and ``n.split``, the order that carries it out.

As leader, ``check(group)`` watches each round's updates; when a side keeps pulling away, the
leader tells one of that side to found a group and the rest to join it. The same order with
``join`` (and ``reason="merge"``) leads a whole group into another when groups merge. As
member, ``on_split`` obeys it from the proven leader of our group's current term only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .. import events
from ..addresses import WireAddress
from ..aio import TaskOwner, loop_time
from ..errors import ChannelError, RemoteError
from ..group.member import GroupMember
from ..group.state import ModelSnapshot
from ..group.transport import Channel, Reply
from ..migration.policy import MigrationPolicy
from ..migration.split import SplitPolicy
from ..records import GroupAdvert, GroupMetrics
from ..records.leadership import MAX_TERM, GroupId
from .config import NodeConfig
from .membership import Emit, Membership

log = logging.getLogger(__name__)

MoveTo = Callable[..., Coroutine[Any, Any, None]]


class SplitRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``n.split``: found a group named ``found``, or join group ``join`` led by ``key``."""

    gid: Annotated[str, Meta(max_length=16)]
    term: Annotated[int, Meta(ge=0, le=MAX_TERM)]
    found: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    join: Annotated[str, Meta(min_length=16, max_length=16)] | None = None
    addr: (
        tuple[
            Annotated[str, Meta(min_length=1, max_length=253)], Annotated[int, Meta(ge=1, le=65535)]
        ]
        | None
    ) = None
    key: Annotated[bytes, Meta(min_length=32, max_length=32)] | None = None
    reason: Literal["split", "merge"] = "split"


class SplitFounded(msgspec.Struct, kw_only=True):
    """The reply to ``n.split`` asking a member to found a group: where its group is."""

    group_id: GroupId
    addr: WireAddress


class Splitter:
    """Splits as leader (``check``) and ``n.split`` orders as member (``on_split``)."""

    def __init__(
        self,
        identity_key: bytes,
        config: NodeConfig,
        membership: Membership,
        migration: MigrationPolicy,
        emit: Emit,
        tasks: TaskOwner,
        move_to: MoveTo,
    ) -> None:
        self.me = identity_key
        self.config = config
        self.membership = membership
        self.migration = migration
        self.emit = emit
        self.tasks = tasks
        self.move_to = move_to
        #: whether we split groups we lead (``config.migration.split`` at start; a program
        #: may turn it on later, as ``scripts/bench_learning.py`` does once every node is in)
        self.enabled = config.migration.split
        self._policies: dict[str, SplitPolicy] = {}  # the group we lead: its splits

    def check(self, group: GroupMember) -> Callable[[dict[bytes, Any], ModelSnapshot], None]:
        """The split check of one stint as ``group``'s leader. The splits it made lately
        outlive the stint (``SplitPolicy`` backs off after each); the streak of evidence
        does not."""
        kept = self._policies.get(group.group_id)
        policy = SplitPolicy(_splits=kept._splits if kept else [])
        self._policies = {group.group_id: policy}  # only the group we lead now

        def on_updates(updates: dict[bytes, Any], model: ModelSnapshot) -> None:
            group = self.membership.group
            if not self.enabled or group is None or not group.is_leader:
                return
            leaving = policy.observe(updates, self.me, loop_time())
            if leaving:
                self.tasks.spawn(self.split(group, leaving, model), name="split")

        return on_updates

    async def split(self, group: GroupMember, leaving: set[bytes], model: ModelSnapshot) -> None:
        """Tell one side to found its own group (seeded with ``model``), and the rest to join it."""
        members = {m.key: m for m in group.members()}
        present = sorted(k for k in leaving if k in members)
        if not present:  # they all left on their own meanwhile
            return
        founder_key, *followers = present
        founder = members[founder_key]
        name = f"{group.info.name}-{len(self.membership.moves) + model.round}"
        self.emit(
            events.SPLIT,
            f"splitting {group.info.name}: {len(leaving)} member(s) pull elsewhere; "
            f"they found {name}",
            group=group.info.name,
            group_id=group.group_id,
            leaving=len(leaving),
            to=name,
        )
        header, _ = await group.channels.request(
            founder.addr,
            founder.key,
            "n.split",
            {"gid": group.group_id, "term": group.term, "found": name},
            timeout=self.config.fl.reply_timeout,
        )
        try:
            founded = msgspec.convert(header, SplitFounded, strict=True)
        except msgspec.ValidationError as exc:  # the rest stay with us: nothing to join
            log.warning("split of %s: the founder's reply is malformed: %s", name, exc)
            return
        order = {
            "gid": group.group_id,
            "term": group.term,
            "join": founded.group_id,
            "addr": list(founded.addr),
            "key": founder.key,
        }
        gone = {founder_key}
        for key in followers:
            member = members[key]
            with contextlib.suppress(ChannelError, RemoteError):
                await group.channels.request(
                    member.addr, member.key, "n.split", order, timeout=self.config.fl.reply_timeout
                )
                gone.add(key)
        # only those that obeyed: one the order missed still votes here (see remove_members)
        group.remove_members(gone)

    async def on_split(self, channel: Channel, header: dict[str, Any]) -> Reply:
        """``n.split`` comes from the proven leader of our group's current term only."""
        group = self.membership.group
        try:
            split = msgspec.convert(header, SplitRequest, strict=True)
        except msgspec.ValidationError as exc:
            return Reply.fail("bad-request", f"n.split: {exc}")
        if (
            group is None
            or group.is_leader
            or split.gid != group.group_id
            or channel.peer_key != group.leader_key
            or split.term != group.term
        ):
            return Reply.fail("not-leader", "splits come from our leader only")
        if split.found is not None:
            await self.membership.leave()
            new = self.membership.found(split.found, group.model)
            self.migration.settled(loop_time())  # a founder that left at once strands it
            self.membership.moved(group.group_id, new.group_id, chosen=False)
            return Reply({"group_id": new.group_id, "addr": list(self.membership.tcp_addr)})
        if split.join is None or split.addr is None or split.key is None:
            return Reply.fail("bad-request", "n.split: found a group or join one")
        advert_like = GroupAdvert(
            group_id=split.join,
            name=split.join,
            task=self.config.task,
            leader=split.addr,
            leader_key=split.key,
            term=0,
            policy="open",
            metrics=GroupMetrics(),
        )
        move = self.move_to(advert_like, reason=split.reason, chosen=False)
        self.tasks.spawn(move, name="split-move")
        return Reply({})
