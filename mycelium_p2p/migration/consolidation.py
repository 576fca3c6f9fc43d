"""When a group should merge into another of its task: structure proposes, measurement decides.

Groups of one task that formed side by side (nodes started together, or cut off from each other
for a while) waste every member's data. A leader looks for a group that *outranks* its own —
more members, or as many and a smaller group id — and has room for all of its members. The
order is total, so two groups never merge into each other at once, and chains settle on the
largest group. A merge happens only where the other group's model serves this node's data at
least as well as its own (within ``tolerance``), in ``confirmations`` checks in a row, so
groups whose data differ never merge and one lucky measurement moves nobody. A group measured
to serve our data worse is passed over for ``recheck_after`` seconds and the next candidate
measured instead: a larger group of other data must not hide a smaller one of ours. A group
that elected a new leader since is measured again at once (members moving out of it change
what its model learns from).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GroupView:
    """What the merge rule reads of a group's advert: neutral facts only."""

    group_id: str
    members: int
    free_slots: int
    open: bool = True
    term: int = 0  # its leader's term: a new one may bring another model along


def outranks(other: GroupView, mine: GroupView) -> bool:
    """Whether ``mine`` should merge into ``other``: more members, or as many and a smaller id."""
    return (other.members, _smaller_first(other.group_id)) > (
        mine.members,
        _smaller_first(mine.group_id),
    )


def _smaller_first(group_id: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in group_id)


def merge_candidates(mine: GroupView, others: Iterable[GroupView]) -> list[GroupView]:
    """Open groups that outrank ours and have room for all of our members, best first."""
    fit = [
        g
        for g in others
        if g.group_id != mine.group_id
        and g.open
        and g.free_slots >= mine.members
        and outranks(g, mine)
    ]
    return sorted(fit, key=lambda g: (g.members, _smaller_first(g.group_id)), reverse=True)


@dataclass(frozen=True)
class MergeConfig:
    tolerance: float = 0.04  # the other model may score this much lower on our data (one
    # sample of a ~50-sample held-out set is 2 points; below the 0.05 a migration needs)
    confirmations: int = 2  # ... in this many checks in a row
    min_rounds: int = 5  # models younger than this tell data apart poorly: not compared yet
    measure_per_check: int = 3  # the most candidates a check measures (a model fetch each)
    recheck_after: float = 10.0  # s: a group measured worse is not measured again before
    # (unless it elected a leader since); the migration check measures every group this often


@dataclass
class MergePolicy:
    """Remembers the streak of the target being confirmed and the groups measured worse.
    Pure: the caller measures and tells the time."""

    config: MergeConfig = field(default_factory=MergeConfig)
    _streak: dict[str, int] = field(default_factory=dict)
    # group -> (when to measure it again, the term it was measured in)
    _worse_until: dict[str, tuple[float, int]] = field(default_factory=dict)

    def to_measure(self, candidates: Sequence[GroupView], now: float) -> list[GroupView]:
        """``candidates`` (best first) that were not measured worse in the last
        ``recheck_after`` s in the term they advertise now, at most ``measure_per_check``."""
        self._worse_until = {g: w for g, w in self._worse_until.items() if w[0] > now}
        fresh = [g for g in candidates if self._worse_until.get(g.group_id, (0.0, -1))[1] != g.term]
        return fresh[: self.config.measure_per_check]

    def decide(
        self,
        own: float | None,
        target: str,
        measured: float | None,
        *,
        rounds: int,
        now: float = 0.0,
        term: int = 0,
    ) -> tuple[bool, str]:
        """Whether to merge into ``target`` now, given our model's score on our data and the
        target model's (None: no model yet; nothing is merged on faith), and the rounds the
        younger of the two models has trained (``now`` and the target's ``term``: when a
        worse one may be measured again)."""
        if own is None or measured is None or rounds < self.config.min_rounds:
            self._streak.clear()
            return False, f"no trained models to compare with {target} yet"
        if measured < own - self.config.tolerance:
            self._streak.pop(target, None)
            self._worse_until[target] = (now + self.config.recheck_after, term)
            return False, f"{target} serves our data worse ({measured:.3f} vs {own:.3f})"
        streak = self._streak.get(target, 0) + 1
        self._streak = {target: streak}
        if streak < self.config.confirmations:
            return False, f"{target} would do; confirming ({streak}/{self.config.confirmations})"
        self._streak.clear()
        return True, f"{target} is larger and serves our data as well ({measured:.3f} vs {own:.3f})"

    def confirming(self, target: str) -> bool:
        """Whether ``target`` would do and waits for its next confirmation."""
        return target in self._streak

    def reset(self) -> None:
        self._streak.clear()
