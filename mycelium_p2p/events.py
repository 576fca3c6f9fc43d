"""What a node reports, by kind: every event kind, in one place.

A node reports each event as a ``NodeEvent(kind, text, fields, at)`` to its ``on_event``;
``join`` prints its text and, with ``--events FILE``, writes it as a JSON line:
``{"t": <unix time>, "kind": ..., "node": <12 hex digits of the node id>, **fields}``
(``LocalNet`` adds ``"peer"``, its own name for the process). The kinds and their fields::

    up          the node is on the network: udp (port), tcp ("host:port"), domain
    waiting     no bootstrap peer answered yet; the node tries again (the text says why)
    founded     it founded a group: group, group_id, policy, capacity
    joined      it joined a group as a member: group, group_id, term, round
    leader      it leads its group: group, group_id, term, round, digest (of the model)
    follower    it stepped down, a newer term exists: group_id, term
    round       its group (it leads) committed a round: group, group_id, round, term,
                accuracy, loss, members, seconds, digest
    evaluated   it measured its group and candidates on its own data: group, group_id,
                accuracy (own group's model), best, best_id (the best candidate or None),
                candidates (how many)
    moving      it migrates to a group that serves its data better: group, group_id, to,
                to_id, reason
    refused     no group would have it, so it founds one (reason), or a group it moved to
                refused it (group_id, reason)
    split       it splits the group it leads: members whose updates pull elsewhere found
                another: group, group_id, leaving (how many), to (the new group's name)
    regroup     its group had no leader for too long; it finds another: group, group_id
    merge       it leads its group's members into another group: group, group_id, and
                to, to_id, reason (merging a small group) or term (a leader of a newer term)
    app-failed  its ClientApp failed too often in a row; the node gives up: group,
                group_id, error
    stopped     it left its group and stopped (written by ``join``)

Programs compare ``kind`` with these names (``events.ROUND``), never with strings of their own.
"""

from __future__ import annotations

from typing import Final, Literal

UP: Final = "up"
WAITING: Final = "waiting"
FOUNDED: Final = "founded"
JOINED: Final = "joined"
LEADER: Final = "leader"
FOLLOWER: Final = "follower"
ROUND: Final = "round"
EVALUATED: Final = "evaluated"
MOVING: Final = "moving"
REFUSED: Final = "refused"
SPLIT: Final = "split"
REGROUP: Final = "regroup"
MERGE: Final = "merge"
APP_FAILED: Final = "app-failed"
STOPPED: Final = "stopped"

#: The type of a ``NodeEvent.kind``.
EventKind = Literal[
    "up",
    "waiting",
    "founded",
    "joined",
    "leader",
    "follower",
    "round",
    "evaluated",
    "moving",
    "refused",
    "split",
    "regroup",
    "merge",
    "app-failed",
    "stopped",
]

#: Every event kind a node reports.
KINDS: frozenset[str] = frozenset(
    {
        UP,
        WAITING,
        FOUNDED,
        JOINED,
        LEADER,
        FOLLOWER,
        ROUND,
        EVALUATED,
        MOVING,
        REFUSED,
        SPLIT,
        REGROUP,
        MERGE,
        APP_FAILED,
        STOPPED,
    }
)
