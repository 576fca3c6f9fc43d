"""Iterative Kademlia lookups over disjoint paths that tolerate lying and silent peers.

- **Disjoint paths** (S/Kademlia §4.4): the closest contacts we hold are dealt round-robin to
  ``paths`` lookups that run side by side. A peer belongs to the first path that hears of it
  and only that path queries it, so a liar misleads the one path it sits on, not the others.
  A path *reached* every peer it asked or that one of its own peers named to it
  (``LookupResult.reached``): a quorum counts a responder for each of those paths, so two
  paths that converge on the same holders need not search on for holders of their own.
- **No waiting for the dead**: each path keeps ``alpha`` queries in flight; a query silent past
  its peer's ``stall_after`` stops counting against ``alpha`` (a late answer is still used).
- **Ending**: a path ends when the ``width`` closest usable peers it knows have answered (a
  ``complete`` lookup, which picks where a put stores, also waits for a stalled peer closer
  than those, up to its timeout); a record lookup also ends as soon as ``enough(result)`` holds.
  A record lookup does *not* end because the closest peers answered "nothing": their
  "nothing" counts like any other answer, and the path goes on to the next closest until
  ``width`` of them answered.
- **Liars**: a peer whose reply is malformed or holds a forged record (``screen`` says so)
  is dropped from the routing table and kept out (``protocol.distrust``). A peer whose
  referrals keep stalling (``blame_after`` strikes, more than twice its good referrals: bogus
  or unreachable contacts) is not asked again in this lookup and its referrals that nobody
  else vouched for are skipped; if they keep *failing* (timing out), it leaves the routing
  table too (it may come back: an honest peer's contacts also die).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from kademlia.node import Node

from .protocol import MyceliumProtocol
from .replies import Answer


class _State(Enum):
    NEW = 0
    PENDING = 1
    SLOW = 2
    DONE = 3
    FAILED = 4
    LIAR = 5  # answered nonsense, or only a liar vouched for it: never asked


_UNUSABLE = (_State.SLOW, _State.FAILED, _State.LIAR)

#: The valid blobs of a reply, or None when the reply holds a forgery (its sender lies).
Screen = Callable[[list[bytes]], "list[bytes] | None"]


@dataclass
class LookupResult:
    """What a lookup learned: the closest responders and, for record lookups, their blobs."""

    closest: list[Node]
    blobs: dict[bytes, list[bytes]] = field(default_factory=dict)  # responder id -> valid blobs
    responders: dict[bytes, Node] = field(default_factory=dict)
    path_of: dict[bytes, int] = field(default_factory=dict)  # responder id -> its path
    reached: dict[bytes, set[int]] = field(default_factory=dict)  # node id -> paths that met it
    hops: dict[bytes, int] = field(default_factory=dict)  # responder id -> its hop (see _Peer)
    partial: set[bytes] = field(default_factory=set)  # responders whose records came in part
    liars: list[Node] = field(default_factory=list)
    paths: int = 1
    queried: int = 0
    timed_out: bool = False  # the deadline ended it, not ``enough`` or running out of peers


@dataclass
class _Peer:
    node: Node
    path: int
    state: _State = _State.NEW
    stall_at: float = 0.0
    vouchers: set[bytes] = field(default_factory=set)  # who told us of it (empty: our table)
    strikes: int = 0  # referrals of this peer that stalled or failed
    failures: int = 0  # referrals of this peer that failed (timed out)
    good: int = 0  # referrals of this peer that answered
    paging: bool = False  # its first page came: it is answering, not stalled
    was_slow: bool = False  # it stalled before its first page came
    hop: int = 1  # 1: from our table; else 1 + the hop of the first peer that named it


class _Lookup:
    """The state of one lookup; ``lookup`` drives it."""

    def __init__(
        self,
        protocol: MyceliumProtocol,
        target: bytes,
        *,
        alpha: int,
        width: int,
        paths: int,
        records: bool,
        screen: Screen | None,
        max_pages: int,
        blame_after: int,
        complete: bool,
    ) -> None:
        self.protocol = protocol
        self.complete = complete
        self.target = target
        self.target_id = int.from_bytes(target, "big")
        self.alpha = alpha
        self.width = width
        self.paths = paths
        self.records = records
        self.screen = screen
        self.max_pages = max_pages
        self.blame_after = blame_after
        self.peers: dict[bytes, _Peer] = {}
        self.condemned: set[bytes] = set()
        self.in_flight: dict[asyncio.Future[Answer | None], _Peer] = {}
        self.result = LookupResult(closest=[], paths=paths)
        seeds = protocol.router.find_neighbors(Node(target), k=max(width, paths))
        for i, node in enumerate(seeds):
            self.learn(node, i % paths, voucher=None)

    def learn(self, node: Node, path: int, voucher: bytes | None) -> None:
        if node.id == self.protocol.source_node.id:
            return
        peer = self.peers.get(node.id)
        if peer is None:
            hop = 1 if voucher is None else self.peers[voucher].hop + 1
            peer = self.peers[node.id] = _Peer(node, path, hop=hop)
            self.result.reached[node.id] = {path}
            if voucher is None:
                return
        if voucher is not None:
            peer.vouchers.add(voucher)
            if voucher not in self.condemned:
                self.result.reached[node.id].add(path)
            if peer.state is _State.LIAR and node.id not in self.condemned:
                peer.state = _State.NEW  # an honest peer vouched for it after all

    def launch(self, peer: _Peer, now: float) -> None:
        if self.records:
            coro = self.protocol.query_records(
                peer.node, self.target, self.max_pages, on_answer=lambda: self.first_page(peer)
            )
        else:
            coro = self.protocol.query_nodes(peer.node, self.target)
        self.in_flight[self.protocol.spawn(coro)] = peer
        peer.state = _State.PENDING
        peer.stall_at = now + self.protocol.rtt.stall_after((peer.node.ip, peer.node.port))
        self.result.queried += 1

    def first_page(self, peer: _Peer) -> None:
        """``peer``'s first page arrived: wait for the rest, however late it started (a big
        key takes several pages; ending without them reads the key only in part)."""
        peer.paging = True
        if peer.state is _State.SLOW:
            peer.state, peer.was_slow = _State.PENDING, True

    def closest_usable(self, path: int) -> list[_Peer]:
        usable = [p for p in self.peers.values() if p.path == path and p.state not in _UNUSABLE]
        usable.sort(key=lambda p: p.node.long_id ^ self.target_id)
        return usable[: self.width]

    def step(self, now: float) -> bool:
        """Mark stalls and launch queries; False once every path is finished."""
        for peer in self.in_flight.values():
            if peer.state is _State.PENDING and not peer.paging and now >= peer.stall_at:
                peer.state = _State.SLOW
                self.blame(peer, "stall")
        active = 0
        any_candidates = False
        for path in range(self.paths):
            candidates = self.closest_usable(path)
            any_candidates = any_candidates or bool(candidates)
            busy = sum(
                1 for p in self.in_flight.values() if p.path == path and p.state is _State.PENDING
            )
            for peer in candidates:
                if busy >= self.alpha:
                    break
                if peer.state is _State.NEW:
                    self.launch(peer, now)
                    busy += 1
            active += busy
        if active == 0 and self.complete and self.slow_among_closest():
            return True  # wait (up to its timeout) for a slow peer among the closest
        # Done when every close usable peer answered, or nobody is left to wait for.
        return not (active == 0 and (any_candidates or not self.in_flight))

    def slow_among_closest(self) -> bool:
        """Is a stalled query open to a peer closer than the ``width``-th that answered?"""
        done = [
            p.node.long_id ^ self.target_id for p in self.peers.values() if p.state is _State.DONE
        ]
        if len(done) < self.width:
            return any(p.state is _State.SLOW for p in self.in_flight.values())
        bound = sorted(done)[self.width - 1]
        return any(
            p.state is _State.SLOW and p.node.long_id ^ self.target_id < bound
            for p in self.in_flight.values()
        )

    def blame(self, peer: _Peer, outcome: str) -> None:
        """Charge a referral's ``outcome`` to those who vouched for it.

        ``stall``: a strike; enough of them and the voucher is not asked again in this lookup
        (cheap to undo, and a busy host stalls). ``timeout``: also a failure; enough failures
        and it leaves the routing table too. ``answer`` counts as good; ``late`` (an answer
        after a stall) also takes the stall's strike back.
        """
        for voucher_id in peer.vouchers:
            voucher = self.peers.get(voucher_id)
            if voucher is None:
                continue
            if outcome in ("answer", "late"):
                voucher.good += 1
                voucher.strikes -= outcome == "late"
                continue
            voucher.strikes += outcome == "stall"
            voucher.failures += outcome == "timeout"
            if voucher.strikes >= self.blame_after and voucher.strikes > 2 * voucher.good:
                self.condemn(voucher)
            if voucher.failures >= self.blame_after and voucher.failures > 2 * voucher.good:
                self.protocol.distrust(voucher.node, proven=False)
                voucher.failures = -len(self.peers)  # once per lookup is enough

    def condemn(self, peer: _Peer, *, proven: bool = False) -> None:
        """``peer`` lies: ask it nothing more and skip what only it vouched for; if that is
        ``proven`` (a malformed reply, a forged record), drop it and keep it out."""
        if peer.node.id in self.condemned:
            return
        self.condemned.add(peer.node.id)
        self.result.liars.append(peer.node)
        if proven:
            self.protocol.distrust(peer.node, proven=True)
        if peer.state is not _State.PENDING:  # a pending query may still finish: let it
            peer.state = _State.LIAR
        for other in self.peers.values():
            if other.state is _State.NEW and other.vouchers and other.vouchers <= self.condemned:
                other.state = _State.LIAR
            if peer.node.id in other.vouchers:  # what it named counts no more for its path
                self.result.reached[other.node.id] = {other.path} | {
                    self.peers[v].path for v in other.vouchers - self.condemned
                }

    def receive(self, peer: _Peer, answer: Answer | None) -> None:
        if answer is None:
            if peer.state is _State.PENDING:  # a stalled one had its strike when it stalled
                self.blame(peer, "stall")
            self.blame(peer, "timeout")
            peer.state = _State.FAILED
            return
        late = peer.state is _State.SLOW or peer.was_slow
        blobs = answer.blobs
        if self.records and self.screen is not None and blobs:
            valid = self.screen(blobs)
            if valid is None:
                answer.malformed = True
            else:
                blobs = valid
        if answer.malformed or peer.node.id in self.condemned:
            self.condemn(peer, proven=answer.malformed)
            peer.state = _State.LIAR
            return
        peer.state = _State.DONE
        self.blame(peer, "late" if late else "answer")
        self.result.responders[peer.node.id] = peer.node
        self.result.path_of[peer.node.id] = peer.path
        self.result.hops[peer.node.id] = peer.hop
        if blobs:
            self.result.blobs[peer.node.id] = blobs
        if not answer.complete:
            self.result.partial.add(peer.node.id)
        for node in answer.nodes:
            self.learn(node, peer.path, voucher=peer.node.id)

    def finish(self) -> LookupResult:
        """The result, without whoever turned out to be a liar."""
        done = [p.node for p in self.peers.values() if p.state is _State.DONE]
        done = [n for n in done if n.id not in self.condemned]
        done.sort(key=lambda n: n.long_id ^ self.target_id)
        self.result.closest = done[: self.width]
        for node_id in self.condemned:
            self.result.blobs.pop(node_id, None)
            self.result.responders.pop(node_id, None)
            self.result.path_of.pop(node_id, None)
            self.result.reached.pop(node_id, None)
            self.result.hops.pop(node_id, None)
            self.result.partial.discard(node_id)
        return self.result


async def lookup(
    protocol: MyceliumProtocol,
    target: bytes,
    *,
    ksize: int,
    alpha: int,
    deadline: float,
    paths: int = 1,
    width: int | None = None,
    records: bool = False,
    screen: Screen | None = None,
    enough: Callable[[LookupResult], bool] | None = None,
    max_pages: int = 32,
    blame_after: int = 3,
    complete: bool = False,
) -> LookupResult:
    """Find the ``width`` (default ``ksize``) closest live nodes to ``target`` over ``paths``
    disjoint paths; with ``records``, collect the valid records they hold too.

    ``screen`` filters each reply's blobs (None: a forgery, its sender is a liar); ``enough``
    ends a record lookup early once what was found suffices. ``complete``: before ending,
    wait (up to their timeouts) for stalled peers closer than the ``width`` that answered, as
    a put's store set should.
    """
    if paths < 1 or alpha < 1:
        raise ValueError(f"need paths >= 1 and alpha >= 1, got {paths} and {alpha}")
    loop = asyncio.get_running_loop()
    state = _Lookup(
        protocol,
        target,
        alpha=alpha,
        width=width or ksize,
        paths=paths,
        records=records,
        screen=screen,
        max_pages=max_pages,
        blame_after=blame_after,
        complete=complete,
    )
    # Queries still open at the end run on (each bounded by its timeout): their answers keep
    # the routing table fresh, and their silence evicts the dead.
    while True:
        now = loop.time()
        if enough is not None and enough(state.result):
            break
        if now >= deadline:
            state.result.timed_out = True
            break
        if not state.step(now):
            break
        waits = [
            p.stall_at
            for p in state.in_flight.values()
            if p.state is _State.PENDING and not p.paging
        ]
        # a silent peer's stall time may lie past the deadline (its RTO reaches 5 s)
        timeout = min(min(waits, default=deadline), deadline) - now
        done, _ = await asyncio.wait(
            list(state.in_flight), timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
        for task in [t for t in state.in_flight if t in done]:  # launch order: reproducible
            peer = state.in_flight.pop(task)
            state.receive(peer, None if task.cancelled() else task.result())
    return state.finish()
