"""When to move: measured gains only, with a threshold, hysteresis, a cooldown and a cap.

A group's advertised accuracy never enters here: every score is the candidate's current model
evaluated by this node on its own held-out data, so a group that lies in its advert attracts
nobody it does not actually serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MigrationConfig:
    """The knobs of migration (accuracies are fractions, times seconds)."""

    performance_threshold: float = 0.05  # a candidate must beat our group by more than this
    confirmations: int = 2  # ... in this many evaluations in a row (hysteresis)
    cooldown: float = 30.0  # no move sooner than this after the last one
    max_moves: int = 5  # at most this many moves in a node's life
    max_candidates: int = 4  # groups evaluated per evaluation


@dataclass(frozen=True)
class Decision:
    move_to: str | None  # a group id, or None to stay
    reason: str


@dataclass
class MigrationPolicy:
    """Remembers recent evaluations and decides. Pure: the caller supplies scores and time."""

    config: MigrationConfig = field(default_factory=MigrationConfig)
    moves: int = 0
    last_move: float = float("-inf")
    _streak: dict[str, int] = field(default_factory=dict)

    def decide(self, own: float, candidates: Mapping[str, float], now: float) -> Decision:
        """``own``: our group's model on our data; ``candidates``: group id -> the same."""
        c = self.config
        winners = {g: s for g, s in candidates.items() if s - own > c.performance_threshold}
        self._streak = {g: self._streak.get(g, 0) + 1 for g in winners}
        if not winners:
            return Decision(None, f"no group beats ours ({own:.3f}) by > {c.performance_threshold}")
        best = max(winners, key=lambda g: (winners[g], g))
        if self._streak[best] < c.confirmations:
            return Decision(
                None,
                f"{best} leads by {winners[best] - own:.3f}; "
                f"confirming ({self._streak[best]}/{c.confirmations})",
            )
        if self.moves >= c.max_moves:
            return Decision(None, f"move cap of {c.max_moves} reached")
        if now - self.last_move < c.cooldown:
            return Decision(None, f"cooling down ({now - self.last_move:.0f}/{c.cooldown:.0f} s)")
        return Decision(best, f"{best} serves our data better: {winners[best]:.3f} vs {own:.3f}")

    def settled(self, now: float) -> None:
        """We are in a new group without having chosen it (a split, a regroup): give it the
        cooldown and forget the streaks measured from the old one. Not counted as a move."""
        self.last_move = now
        self._streak.clear()

    def moved(self, now: float) -> None:
        self.moves += 1
        self.last_move = now
        self._streak.clear()
