"""Leader election: the rules, as pure functions and one small state object.

The algorithm (also in docs/design/groups.md):

1. A member's *lease* on its leader lapses when heartbeats fail for ``lease_timeout`` or the
   leader's connection is refused or reset.
2. The *electorate* of the next term is the last roster the old leader sent, minus the old
   leader. A candidate needs votes from a strict majority of it (itself included). A member
   that follows a leader but holds no roster of that leader's term (a deposed leader that
   adopted its successor's certificate, a voter the new roster has not reached yet) does not
   stand: leaving the new leader out of an older roster counts a majority among the wrong
   electors (``holds_electorate``). It waits for that roster, or rejoins.
3. Candidates stand in a deterministic order, by public key: the candidate of rank r waits
   r * ``stagger`` before asking, and does not stand once a new leader has announced itself.
   A candidate that fails waits (electorate size + r) * ``stagger``, so the next ranks get their
   turn before it retries with a higher term.
4. A member grants at most one vote per term (recorded on disk before it is cast, where the
   node has a data directory: ``VoteJournal``, so a restart does not vote again), never for
   a term at or below one it has seen,
   only to a candidate holding a model round and a roster at least as new as its own, and only
   once its own lease has lapsed (so a member that can still reach the leader does not help
   depose it). The candidate's round is the one its leader's signed commit proves
   (``CommitProof``, checked by ``Authority.candidate_round``). Rosters carry a version
   (the term of the leader that made them, and a count): a candidate that missed roster
   changes (members dropped while it was cut off) counts its majority among electors that are
   no longer the group's, and is refused, as Raft refuses a candidate whose log is behind;
   so is a candidate whose roster predates the term of the leader the voter follows.
5. A failed candidacy does not raise the candidate's own term; it retries with a higher one.
6. Every leader-to-member request carries the term. Members refuse a lower term; a leader that
   sees a higher term steps down at once and cannot complete its round (fencing).

Guarantees: among members that share a roster, at most one leader per term (two majorities of
one electorate intersect in a member that votes once per term); so too among members whose
rosters are one change apart, and a leader makes the next change only once a majority of its
roster holds the last one (``RosterUpkeep.settled``: rosters two changes apart need not share
a majority, and the members still holding the older one can then elect no one). The leader
of a new term holds the newest committed model: a round commits only when a majority of the
roster acknowledged it (while a join or a drop is not yet known to most members, a majority of
the roster before the change and of the one after it: ``Commits.commit``), and that majority
intersects every electorate majority, whose voters refuse older candidates.
Not guaranteed: progress while a majority of the electorate is unreachable (the group waits,
and members that stay silent beyond ``member_timeout`` drop out of the roster as the leader
renews it), nor when a new leader dies before its roster reached any member (none may stand;
the node runtime moves them to another group).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from .votes import KEEP, VoteJournal

log = logging.getLogger(__name__)

# A vote moves a member's term at most this far: one member asking for a huge term would
# otherwise pin the group's term at the top (and, voted in, keep it there across restarts).
MAX_TERM_STEP = 64


def majority(n: int) -> int:
    """Votes needed among ``n`` electors."""
    return n // 2 + 1


def electorate(roster: Iterable[bytes], old_leader: bytes | None) -> set[bytes]:
    """Who votes for the next term: the roster without the leader whose lease lapsed."""
    return {key for key in roster if key != old_leader}


def holds_electorate(roster_version: tuple[int, int], leader_term: int | None) -> bool:
    """Whether a roster of this version may elect the successor of the leader of
    ``leader_term`` (None: no leader to replace): only one that leader made, or a newer one.

    Every roster a leader sends carries its term (it makes one as it takes office). Leaving
    the new leader out of a roster of the term before counts the previous leader, whom the new
    one dropped, as an elector and lets a majority form without the members that acknowledged
    the new leader's rounds: in a group of two, each of two live nodes wins alone in turn.
    """
    return leader_term is None or roster_version[0] >= leader_term


def candidate_rank(me: bytes, electors: Iterable[bytes]) -> int:
    """My place in the order candidates stand in: by public key, so every member computes the
    same order even when what it knows of the others' rounds is stale (voters check rounds)."""
    order = sorted(electors)
    return order.index(me) if me in order else len(order)


@dataclass
class ElectionState:
    """A member's term and votes; with a ``journal``, each vote is on disk before it counts,
    and the votes of an earlier run of this node are restored (``restored``)."""

    term: int = 0
    votes: dict[int, bytes] = field(default_factory=dict)  # term -> candidate voted for
    journal: VoteJournal | None = None
    floor: int = 0  # no vote in a term at or below this (older than the restored ones)

    @classmethod
    def restored(cls, journal: VoteJournal) -> ElectionState:
        """The votes ``journal`` holds, so that a restarted node does not vote twice in their
        terms (nor in older ones, which it no longer knows)."""
        votes = journal.load()
        floor = max(0, max(votes) - KEEP) if votes else 0
        return cls(votes=votes, journal=journal, floor=floor)

    def _cast(self, term: int, candidate: bytes) -> bool:
        """Record a vote (on disk first, with a journal); False if it cannot be recorded."""
        before, floor = dict(self.votes), self.floor
        self.votes[term] = candidate
        pruned = [t for t in self.votes if t < term - KEEP]
        for old in pruned:
            del self.votes[old]
        # a term whose vote we forget is one we may not vote in again
        self.floor = max([self.floor, *pruned])
        if self.journal is not None:
            try:
                self.journal.record(self.votes)
            except OSError as exc:
                log.warning("vote in term %d not cast: cannot record it: %s", term, exc)
                self.votes, self.floor = before, floor
                return False
        return True

    def next_term(self, me: bytes, highest: int) -> int:
        """The term to stand in next: past ours, the ``highest`` seen, and every term we gave
        another candidate our vote in or no longer know our vote in (after a restart, a term
        we cannot stand in would be tried for ever)."""
        others = [t for t, c in self.votes.items() if c != me]
        return max([self.term, highest, self.floor, *others]) + 1

    def observe(self, term: int) -> bool:
        """Adopt a newer term seen on the wire; True if it was newer."""
        if term > self.term:
            self.term = term
            return True
        return False

    def stand(self, term: int, me: bytes) -> bool:
        """Vote for myself in ``term`` (without adopting it); False if I already voted."""
        if term <= max(self.term, self.floor) or self.votes.get(term, me) != me:
            return False
        return self._cast(term, me)

    def won(self, term: int) -> None:
        self.term = max(self.term, term)

    def grant(
        self,
        term: int,
        candidate: bytes,
        *,
        candidate_round: int,
        my_round: int,
        lease_lapsed: bool,
        candidate_roster: tuple[int, int] = (0, 0),
        my_roster: tuple[int, int] = (0, 0),
        leader_term: int | None = None,
    ) -> tuple[bool, str]:
        """Whether to vote for ``candidate`` in ``term`` (adopting the term), and why not."""
        voted = self.votes.get(term)
        if voted == candidate and term >= self.term:
            return True, "granted again"
        if term <= self.term:
            return False, f"term {term} is not newer than my term {self.term}"
        if term > self.term + MAX_TERM_STEP:
            return False, f"term {term} is over {MAX_TERM_STEP} past my term {self.term}"
        if term <= self.floor:
            return False, f"term {term} is older than the votes I kept (restarted)"
        if voted is not None:
            return False, f"voted for another candidate in term {term}"
        if candidate_round < my_round:
            return False, f"candidate holds round {candidate_round}, I hold {my_round}"
        if tuple(candidate_roster) < tuple(my_roster):
            return False, f"candidate holds roster {candidate_roster}, I hold {my_roster}"
        if not holds_electorate((candidate_roster[0], candidate_roster[1]), leader_term):
            return False, f"candidate holds roster {candidate_roster}, older than my leader's term"
        if not lease_lapsed:
            return False, "my leader is alive"
        if not self._cast(term, candidate):
            return False, "cannot record my vote"
        self.term = term
        return True, "granted"
