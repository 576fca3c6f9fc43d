"""Measuring a group's model on this node's own held-out data, through its own ClientApp."""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

from ..errors import BadMessage, ChannelError
from ..fl.client import ClientRunner
from ..fl.leader import arrays_of, metric
from ..fl.messages import leader_message
from ..group.messages import ModelReply, parse
from ..group.state import ModelSnapshot
from ..group.transport import ChannelServer
from ..records import GroupAdvert


async def score(runner: ClientRunner, snapshot: ModelSnapshot) -> float | None:
    """The model's accuracy on our held-out data (our ClientApp's evaluate), or None. A model
    that fails our evaluate (a peer's, of other shapes) does not count as our app failing."""
    if snapshot.empty:
        return None
    content = RecordDict({"arrays": arrays_of(snapshot), "config": ConfigRecord({})})
    message = leader_message(runner.node_id, "evaluate", content, group_id="migration")
    reply = await runner.run(message, count=False)
    if reply.has_error() or not reply.content.metric_records:
        return None
    return metric(next(iter(reply.content.metric_records.values())), "acc", -1.0)


async def fetch_model(
    channels: ChannelServer, advert: GroupAdvert, timeout: float, max_bytes: int | None = None
) -> ModelSnapshot:
    """A candidate group's current model, from its leader (open groups share it with anyone).

    The digest is checked; raises ``ChannelError``/``RemoteError`` when it cannot be had, or
    when its arrays would exceed ``max_bytes`` (then they are not read).
    """
    header, segments = await channels.request(
        advert.leader,
        advert.leader_key,
        "g.model",
        {"gid": advert.group_id},
        timeout=timeout,
        max_reply=max_bytes,
    )
    try:
        reply = parse(ModelReply, header)
        snapshot = ModelSnapshot.of(reply.round, reply.content, segments)
    except (BadMessage, TypeError, ValueError) as exc:
        raise ChannelError(f"{advert.name}'s model reply is malformed: {exc}") from None
    if reply.content is None or snapshot.digest != reply.digest:
        return ModelSnapshot()
    return snapshot
