"""Flower messages made outside Flower's runtime, as a leader and its members exchange them.

Flower's ``Message()`` reads a process-global ``TaskIdentity`` (``ensure_task_identity`` sets
placeholders); every message's metadata is then built here, with the members' Flower node ids
derived from their keys and the leader's fixed (``LEADER_NODE_ID``).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from flwr.app import Message, Metadata, RecordDict
from flwr.app.message import make_message
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

LEADER_NODE_ID = 0  # the leader's Flower node id, in every group


def ensure_task_identity() -> None:
    """Flower's ``Message()`` needs a process-global TaskIdentity; placeholders suffice."""
    for name in ("run_id", "node_id", "task_id"):
        try:
            getattr(TaskIdentity, name)
        except RuntimeError:
            setattr(TaskIdentity, name, 0)


def flower_node_id(key: bytes) -> int:
    """A member's Flower node id: 63 bits of the hash of its public key (never 0)."""
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1 or 1


def make_metadata(
    *,
    message_id: str,
    src: int,
    dst: int,
    message_type: str,
    group_id: str,
    reply_to: str = "",
    ttl: float = 3600.0,
    run_id: int = 0,
) -> Metadata:
    return Metadata(
        run_id=run_id,
        message_id=message_id,
        src_node_id=src,
        dst_node_id=dst,
        reply_to_message_id=reply_to,
        group_id=group_id,
        created_at=time.time(),
        ttl=ttl,
        message_type=message_type,
    )


def leader_message(
    dst: int,
    message_type: str,
    content: RecordDict,
    *,
    group_id: str = "",
    message_id: str | None = None,
) -> Message:
    """A message from the group's leader to member ``dst`` (a Flower node id)."""
    metadata = make_metadata(
        message_id=message_id or uuid.uuid4().hex,
        src=LEADER_NODE_ID,
        dst=dst,
        message_type=message_type,
        group_id=group_id,
    )
    return make_message(metadata, content=content)


class RunGrid(Grid):
    """What every Grid of ours keeps the same way: the run it was given, and messages made
    as Flower makes them (the transport and node ids are each subclass's own)."""

    _run: Any = None

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content=content,
            dst_node_id=dst_node_id,
            message_type=message_type,
            group_id=group_id,
            ttl=ttl,
        )
