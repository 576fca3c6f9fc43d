"""``Membership``: which group this node is in, and how it gets into one and out again.

It enters a group (the configured one; else, of the joinable groups, one whose model serves
our data about as well as the best we could measure, the largest first, and, after a regroup,
not clearly worse than the model it brings along; else one it founds with that model),
adopts it (``group``), and leaves it. Moves, splits, merges and regroups all
go through it, one at a time (``change``). After a regroup it remembers the group it left
(``origin``), so the node can go back once that group answers again (``merging``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from .. import events
from ..addresses import Address
from ..aio import loop_time
from ..dht import DhtNode, fetch_adverts
from ..errors import ConfigError, JoinRefused, MyceliumError
from ..fl.client import ClientRunner
from ..group.member import GroupMember
from ..group.state import GroupInfo, ModelSnapshot
from ..group.transport import ChannelServer
from ..group.votes import VoteJournal
from ..identity import Identity
from ..migration.measure import fetch_model, score
from ..records import GroupAdvert
from ..records.charter import GroupCharter, is_group_id
from .choosing import rank_joinable, rank_measured, select_group
from .config import NodeConfig

log = logging.getLogger(__name__)
GROUP_LOOKUP_RETRIES = 5  # once a second, for a --group not advertised yet
MEASURE_TIMEOUT = 2.0  # s: for a candidate's model when entering; a slower one is not measured
JOIN_RETRY_FOR = 30.0  # s: how long a --group that refuses us for now (regrouping...) is retried
FINAL_REFUSALS = frozenset({"full", "invite"})  # refusals that waiting does not change

Emit = Callable[..., None]


@dataclass(frozen=True)
class Origin:
    """After a regroup: the group we ``entered`` instead of the one we ``left`` (its roster
    then), ``at`` (monotonic). Only a leader from that roster is followed back: an advert of
    a newer term with a made-up certificate is anyone's to publish."""

    entered: str
    left: str
    at: float
    roster: frozenset[bytes]


@dataclass
class GroupHooks:
    """What the rest of the node does when the group changes hands (set by ``Node``)."""

    on_leader: Callable[[int], None] = lambda term: None
    on_follower: Callable[[], None] = lambda: None
    on_leave: Callable[[], None] = lambda: None  # before the group closes: stop leading it


class Membership:
    """This node's place in a group: ``group`` (None between groups), entered, left, one change
    at a time under ``change``."""

    def __init__(
        self,
        identity: Identity,
        config: NodeConfig,
        dht: DhtNode,
        channels: ChannelServer,
        runner: ClientRunner | None,
        emit: Emit,
        hooks: GroupHooks,
        rng: random.Random,
        *,
        model_cap: int | None = None,
    ) -> None:
        self.identity = identity
        self.model_cap = model_cap  # the most a candidate's model may hold (``model_cap``)
        self.config = config
        self.dht = dht
        self.channels = channels
        self.runner = runner  # measures candidates on our data (None: neutral order only)
        self.emit = emit
        self.hooks = hooks
        self.rng = rng
        self.group: GroupMember | None = None
        self.tcp_addr: Address = ("", 0)  # where peers reach us (set by ``Node.start``)
        self.change = asyncio.Lock()  # one move, split or regroup at a time
        self.origin: Origin | None = None  # after a regroup: where we came from
        self.moves: list[tuple[float, str, str]] = []  # (time, from group, to group)

    async def enter(
        self,
        *,
        as_configured: bool = True,
        model: ModelSnapshot | None = None,
        origin: tuple[str, frozenset[bytes]] | None = None,
    ) -> None:
        """Found or join the configured group, or (after a failed move) any that has room.
        ``model``: the model of a group a regroup left; a group that serves our data clearly
        worse than it is not joined (we found one with it instead, so that a cut-off node
        does not fill a slot of another data domain's group). ``origin``: the group a regroup
        left and its roster; we remember it, to go back to once that group is reachable
        again."""
        c = self.config
        if c.group.create and as_configured:
            self.found(c.group.create)
            return
        if c.group.join and as_configured:
            await self._join_configured()
            self.remember_origin(origin)
            return
        chosen, passed_over = await self._candidates(model)
        refusals: list[str] = []
        tried = set(passed_over)
        if await self._join_first(chosen, refusals, tried):
            self.remember_origin(origin)
            return
        if refusals and c.group.founding_jitter > 0:
            # nodes cut off together (a partition) all fail to reach the groups they know at
            # once: look again, so that they mostly join the first of them to found one
            await asyncio.sleep(self.rng.uniform(0, c.group.founding_jitter))
            # groups founded meanwhile are measured against our model like the others were
            again, passed_over = await self._candidates(model, skip=tried)
            tried |= passed_over
            if await self._join_first(again, refusals, tried):
                self.remember_origin(origin)
                return
        if refusals:  # say why, or a firewalled node founds groups of one without a word
            self.emit(
                events.REFUSED,
                f"could not join any advertised group ({'; '.join(refusals)}); founding one",
                reason="; ".join(refusals),
            )
        self.found(f"{c.task}-{self.identity.node_id.hex()[:6]}", model)
        self.remember_origin(origin)

    async def _join_configured(self) -> None:
        """Join ``--group``. A refusal that may pass (the group is regrouping or electing, its
        leader unreachable for now) is retried, with a growing pause, for ``JOIN_RETRY_FOR``
        s, each time from a fresh advert; a full group or a bad invite fails at once."""
        c = self.config
        deadline = loop_time() + JOIN_RETRY_FOR
        pause = 1.0
        while True:
            refusals: list[str] = []
            codes: list[str] = []
            if await self._join_first(await self._configured(), refusals, set(), codes):
                return
            final = bool(codes) and all(code in FINAL_REFUSALS for code in codes)
            if final or loop_time() + pause > deadline:
                raise ConfigError(f"cannot join group {c.group.join!r}: {'; '.join(refusals)}")
            log.info("%s; trying again in %g s", "; ".join(refusals), pause)
            await asyncio.sleep(pause)
            pause = min(2 * pause, 5.0)

    async def _configured(self) -> list[GroupAdvert]:
        """The advert of ``--group``, waiting a few seconds for one founded a moment ago."""
        c = self.config
        assert c.group.join is not None
        adverts = await fetch_adverts(self.dht, c.task)
        chosen = select_group(adverts, c.group.join)
        for _ in range(GROUP_LOOKUP_RETRIES):
            if chosen:
                return chosen
            await asyncio.sleep(1.0)
            adverts = await fetch_adverts(self.dht, c.task)
            chosen = select_group(adverts, c.group.join)
        if not chosen:
            names = ", ".join(sorted({a.name for a in adverts})) or "none"
            raise ConfigError(
                f"no group {c.group.join!r} is advertised for task {c.task!r} (advertised: {names})"
            )
        return chosen

    async def _candidates(
        self, model: ModelSnapshot | None = None, skip: Collection[str] = ()
    ) -> tuple[list[GroupAdvert], set[str]]:
        """Joinable groups not in ``skip``, best first, and the ids of those left out as
        clearly worse for our data than ``model`` (ours, after a regroup); none found at
        first: wait a little and look again (nodes started together then mostly join the
        first one's group)."""
        c = self.config

        async def joinable_now() -> list[GroupAdvert]:
            adverts = rank_joinable(await fetch_adverts(self.dht, c.task))
            return [a for a in adverts if a.group_id not in skip]

        chosen = await joinable_now()
        if not chosen and not skip and c.group.founding_jitter > 0:
            await asyncio.sleep(self.rng.uniform(0, c.group.founding_jitter))
            chosen = await joinable_now()
        own = None
        if model is not None and self.runner is not None and chosen:
            try:
                own = await score(self.runner, model)
            except Exception:  # our own evaluate failed: choose as if we brought nothing
                log.warning("measuring the model we bring along failed", exc_info=True)
        limit = c.migration.policy_config().max_candidates
        scores = await self._measure(chosen[:limit], alone=own is not None)
        threshold = c.migration.performance_threshold
        ranked = rank_measured(chosen, scores, threshold, own)
        passed_over = {a.group_id for a in chosen} - {a.group_id for a in ranked}
        for advert in chosen:
            if advert.group_id in passed_over:
                log.info(
                    "passing over %s: it serves our data clearly worse (%.3f) than the model "
                    "we bring along (%.3f)",
                    advert.name,
                    scores[advert.group_id],
                    own,
                )
        return ranked, passed_over

    async def _measure(
        self, adverts: list[GroupAdvert], *, alone: bool = False
    ) -> dict[str, float]:
        """The candidates' models scored on our own data, at once; those that do not come
        within ``MEASURE_TIMEOUT`` or do not score are left out. Never an advert's claim.
        One candidate is measured only ``alone`` (against a model of our own)."""
        runner = self.runner
        if runner is None or len(adverts) < (1 if alone else 2):  # nothing to choose between
            return {}

        async def one(advert: GroupAdvert) -> float | None:
            model = await fetch_model(self.channels, advert, MEASURE_TIMEOUT, self.model_cap)
            return await score(runner, model)

        results = await asyncio.gather(*(one(a) for a in adverts), return_exceptions=True)
        scores: dict[str, float] = {}
        for advert, result in zip(adverts, results, strict=True):
            if isinstance(result, float):
                scores[advert.group_id] = result
            elif isinstance(result, Exception) and not isinstance(result, MyceliumError):
                log.warning("measuring %s failed: %r", advert.name, result)
        return scores

    def remember_origin(self, origin: tuple[str, frozenset[bytes]] | None) -> None:
        """After a regroup: remember ``origin``, the group we left and its roster then, to go
        back to once it is reachable again (unless we went back into that very group)."""
        group = self.group
        if origin is None or group is None or group.group_id == origin[0]:
            self.origin = None
            return
        self.origin = Origin(group.group_id, origin[0], loop_time(), origin[1])

    def keep_origin(self, origin: Origin | None, old: str) -> None:
        """After a move out of ``old`` that no group let us in for: the way back ``origin``
        (if it started from ``old``) now starts from the group we entered instead."""
        group = self.group
        if origin is None or group is None or origin.entered != old:
            return
        if group.group_id != origin.left:
            self.origin = Origin(group.group_id, origin.left, origin.at, origin.roster)

    def moved(self, old: str, new: str, *, chosen: bool) -> None:
        """Record a move from group ``old`` to ``new``. A move we did not choose (a split or a
        merge order) takes our ``origin`` along: being split off the group we regrouped into,
        or merged on with it, does not change which group served our data before a cut."""
        self.moves.append((time.time(), old, new))
        origin = self.origin
        if chosen or (origin is not None and new == origin.left):
            self.origin = None  # we chose where to be, or are back where we came from
        elif origin is not None and origin.entered == old:
            self.origin = Origin(new, origin.left, origin.at, origin.roster)

    async def _join_first(
        self,
        chosen: list[GroupAdvert],
        refusals: list[str],
        tried: set[str],
        codes: list[str] | None = None,
    ) -> bool:
        """Join the first of ``chosen`` that lets us in; record why the others did not (and
        the leaders' refusal codes in ``codes``)."""
        for advert in chosen:
            tried.add(advert.group_id)
            try:
                await self.join(advert)
                return True
            except JoinRefused as exc:
                refusals.append(f"{advert.name}: {exc}")
                if codes is not None:
                    codes.append(exc.code)
            except Exception as exc:  # a leader that broke the channel or sent nonsense
                log.warning("joining %s failed", advert.name, exc_info=True)
                refusals.append(f"{advert.name}: {type(exc).__name__}: {exc}")
        return False

    async def join(self, advert: GroupAdvert) -> None:
        """Join ``advert``'s group as a member (raises ``JoinRefused`` and channel errors)."""
        group = await GroupMember.join_group(
            self.identity,
            self.channels,
            self.tcp_addr,
            group_id=advert.group_id,
            leader_addr=advert.leader,
            leader_key=advert.leader_key,
            invite=self.config.group.invite,
            config=self.config.group.member_config(),
            max_model=self.model_cap,
            votes=self._votes(advert.group_id),
        )
        self._adopt(group)
        self.emit(
            events.JOINED,
            f"joined group {advert.name} ({advert.group_id}) as member, "
            f"term {group.term}, round {group.model.round}",
            group=group.info.name,
            group_id=group.group_id,
            term=group.term,
            round=group.model.round,
        )
        group.start()

    def found(self, name: str, model: ModelSnapshot | None = None) -> GroupMember:
        """Found a group named ``name`` (seeded with ``model``) and lead it."""
        c = self.config
        charter = GroupCharter.found(
            self.identity,
            name=name,
            task=c.task,
            policy=c.group.policy,
            capacity=c.group.capacity,
            now=time.time(),
        )
        info = GroupInfo(charter)
        group = GroupMember(
            self.identity,
            self.channels,
            info,
            self.tcp_addr,
            c.group.member_config(),
            self._votes(info.group_id),
        )
        group.max_model = self.model_cap  # a founder may rejoin its group's later leader
        if model is not None:
            group.adopt_model(model)
        self._adopt(group)
        self.emit(
            events.FOUNDED,
            f"founded group {name} ({info.group_id}), "
            f"{c.group.policy}, capacity {c.group.capacity}",
            group=name,
            group_id=info.group_id,
            policy=c.group.policy,
            capacity=c.group.capacity,
        )
        group.found()
        group.start()
        return group

    def _votes(self, group_id: str) -> VoteJournal | None:
        """Where our votes in ``group_id`` are kept across restarts (with a data directory)."""
        if self.config.data_dir is None or not is_group_id(group_id):
            return None
        return VoteJournal(Path(self.config.data_dir) / "groups" / f"{group_id}.votes")

    def _adopt(self, group: GroupMember) -> None:
        self.group = group
        if self.config.data_dir is not None:
            save_charter(Path(self.config.data_dir), group.info)
        group.on_leader = self.hooks.on_leader
        group.on_follower = self.hooks.on_follower

    async def leave(self) -> None:
        """Stop leading, close the group (its loop must not win an election meanwhile) and say
        goodbye (at most 2 s: the others may be gone)."""
        self.hooks.on_leave()
        group, self.group = self.group, None
        if group is not None:
            await group.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(group.leave(), 2.0)


def save_charter(data_dir: Path, info: GroupInfo) -> None:
    """Keep the charters of our groups, so ``mycelium-p2p invite`` can name them."""
    folder = data_dir / "groups"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{info.group_id}.charter"
    if not path.exists():
        path.write_bytes(info.charter.blob)
