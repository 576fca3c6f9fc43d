"""What a chaos run checks: ``Invariants`` over the node events (in time order), and
``Check``, something that must become true before a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ... import events as ev
from .config import Summary


class Invariants:
    """Fed with node events (in time order); records violations as they happen."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self.top_round: dict[str, int] = {}  # group -> highest completed round
        self.models: dict[tuple[str, int], str] = {}  # (group, round) -> model digest
        self.term_rounds: dict[tuple[str, int], str] = {}  # (group, term) -> who completed rounds
        self.term_leader: dict[tuple[str, int], str] = {}  # (group, term) -> who was elected
        self.role: dict[str, tuple[str | None, str]] = {}  # peer -> (group, role)
        self.last_round: dict[str, tuple[float, str]] = {}  # group -> (time, leader peer)
        self.first_round: dict[str, float] = {}  # group -> when its first round was reported
        self.ended: dict[str, float] = {}  # group -> when its leader left it (moved, regrouped)

    def violation(self, text: str) -> None:
        self.summary.violations.append(f"{time.strftime('%H:%M:%S')} {text}")

    def on_event(self, e: dict[str, Any]) -> None:
        peer, kind, gid = e["peer"], e.get("kind"), e.get("group_id")
        was = self.role.get(peer, (None, "none"))
        if kind in (ev.MOVING, ev.REGROUP, ev.MERGE, ev.STOPPED) and was[1] == "leader" and was[0]:
            self.ended[was[0]] = float(e["t"])
        if kind in (ev.FOUNDED, ev.LEADER) and gid:
            self.role[peer] = (gid, "leader")
        elif kind in (ev.JOINED, ev.FOLLOWER) and gid:
            self.role[peer] = (gid, "member")
        elif kind in (ev.MOVING, ev.STOPPED, ev.UP, ev.REGROUP):
            self.role[peer] = (None, "none")
        if kind == ev.LEADER and gid:
            if e.get("digest") and e.get("round"):  # the model it leads from is that round's
                self.models.setdefault((gid, int(e["round"])), str(e["digest"]))
            key = (gid, int(e.get("term", 0)))
            first = self.term_leader.setdefault(key, peer)
            if first != peer:
                self.violation(f"two leaders elected in term {key[1]} of {gid}: {first}, {peer}")
        if kind == ev.ROUND and gid:
            digest = str(e.get("digest", ""))
            self._on_round(peer, gid, int(e["round"]), int(e["term"]), float(e["t"]), digest)

    def _on_round(self, peer: str, gid: str, rnd: int, term: int, at: float, digest: str) -> None:
        self.summary.rounds_completed += 1
        first = self.term_rounds.setdefault((gid, term), peer)
        if first != peer:
            self.violation(f"{first} and {peer} both completed rounds in term {term} of {gid}")
        known = self.models.get((gid, rnd))
        if known is None:
            self.models[(gid, rnd)] = digest
        elif digest and known == digest:
            return  # reported late (its leader was frozen), the very model the group went on from
        top = self.top_round.get(gid, 0)
        if known is not None and digest and known != digest:
            self.summary.rounds_lost += 1
            self.violation(f"{gid} round {rnd} has two models (under {peer}, term {term})")
        elif rnd <= top:
            self.summary.rounds_lost += 1
            what = "repeated" if rnd == top else "went back to"
            self.violation(f"{gid} {what} round {rnd} (had {top}) under {peer}, term {term}")
        self.top_round[gid] = max(top, rnd)
        self.last_round[gid] = (at, peer)
        self.first_round.setdefault(gid, at)

    def leaders(self, alive: Callable[[str], bool]) -> dict[str, set[str]]:
        """Group -> the live peers whose last word was that they lead it."""
        out: dict[str, set[str]] = {}
        for peer, (gid, role) in self.role.items():
            if gid and role == "leader" and alive(peer):
                out.setdefault(gid, set()).add(peer)
        return out


@dataclass
class Check:
    """Something that must become true before ``deadline``."""

    what: str
    started: float
    deadline: float
    test: Callable[[], bool]
    on_pass: Callable[[float], None]
    explain: Callable[[], str] = lambda: ""
    soft: bool = False  # a goal not met yet: missing it is counted, not a violation
