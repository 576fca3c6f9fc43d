"""How a node chooses a group to enter: by neutral facts (room, size, id), then by what it
measured on its own data, never by what an advert claims. Pure functions; ``Membership``
fetches the adverts and measures."""

from __future__ import annotations

from flwr.app import ArrayRecord

from ..errors import ConfigError
from ..records import GroupAdvert


def joinable(advert: GroupAdvert) -> bool:
    """Open, with room, and not dissolved (a leader that left alone advertises 0 members)."""
    return advert.policy == "open" and advert.free_slots > 0 and advert.metrics.members > 0


def rank_joinable(adverts: list[GroupAdvert]) -> list[GroupAdvert]:
    """Joinable groups in the order a node without measurements tries them: by neutral facts
    (the most members first, then the group id), never by what an advert claims to score."""
    return sorted(
        (a for a in adverts if joinable(a)), key=lambda a: (-a.metrics.members, a.group_id)
    )


def rank_measured(
    ranked: list[GroupAdvert],
    scores: dict[str, float],
    threshold: float,
    own: float | None = None,
) -> list[GroupAdvert]:
    """``ranked`` (in neutral order) with the groups we measured to serve our data clearly
    worse than the best we measured (by more than ``threshold``) moved last, each in the
    order they had, and those clearly worse than ``own`` (the score of the model we bring
    along, after a regroup) left out: founding with our model serves us better than they
    would. A group we could not measure keeps its place: a busy leader is no evidence
    against its model."""
    if own is not None:
        ranked = [a for a in ranked if scores.get(a.group_id, own) >= own - threshold]
    if not scores:
        return ranked
    best = max(scores.values())
    worse = {gid for gid, s in scores.items() if s < best - threshold}
    return [a for a in ranked if a.group_id not in worse] + [
        a for a in ranked if a.group_id in worse
    ]


def model_cap(initial: ArrayRecord) -> int:
    """The most a model of our task may hold on the wire: twice our own starting model's
    arrays, and 1 MiB for the rest. A group of our task sends arrays of the same shapes, so a
    bigger reply is not a model we could score: it is refused before it is read."""
    return 2 * sum(len(array.data) for array in initial.values()) + 2**20


def select_group(adverts: list[GroupAdvert], wanted: str) -> list[GroupAdvert]:
    """The advert ``wanted`` names: by group id, or by name when one group alone bears it
    (anyone can found a group of any name). Raises ``ConfigError`` for an ambiguous name."""
    by_id = [a for a in adverts if a.group_id == wanted]
    if by_id:
        return by_id
    by_name = [a for a in adverts if a.name == wanted]
    if len(by_name) > 1:
        ids = ", ".join(sorted(a.group_id for a in by_name))
        raise ConfigError(f"several groups are named {wanted!r} ({ids}): choose one by its id")
    return by_name
