"""The leader's checks on members' replies, made inside the Grid before any strategy sees them.

A stock strategy trusts every reply: one NaN makes the average NaN, one ``num-examples`` of
1e300 makes the average that member's model. So each reply is checked on its own
(``check_reply``) and then against the round's other replies (``screen_round``). A reply that
fails becomes a Flower ``Error`` reply, which every stock strategy skips, and the round goes
on with the rest. Per reply:

- exactly one MetricRecord, whose ``num-examples`` is an int or float, finite, positive and at
  most ``Screening.max_examples``; every metric finite (they are averaged too);
- for training, exactly one ArrayRecord with the keys, dtypes and shapes of the arrays sent,
  every value finite, and an update (reply minus sent, L2 over all arrays) of at most
  ``Screening.max_update_norm``.

Per round (it needs all replies, so only ``send_and_receive`` applies it): the same metric keys
as most replies (Flower aborts the round otherwise), and an update norm of at most
``Screening.norm_factor`` times the round's median. ``limits.Screening`` says why these bounds.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Error, Message, RecordDict
from flwr.app.message import make_message
from flwr.common.constant import ErrorCode

from .limits import Screening
from .npy import to_ndarray
from .wire import array_signature

log = logging.getLogger(__name__)

WEIGHT_KEY = "num-examples"


def _finite(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def check_weight(weight: Any, limits: Screening | None) -> str | None:
    """Why ``weight`` (a reply's ``num-examples``) is unusable, or None."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        return f"{WEIGHT_KEY} {weight!r} is not a number"
    if limits is None:
        return None if weight > 0 else f"metrics lack a positive {WEIGHT_KEY!r}"
    if not math.isfinite(weight) or weight <= 0:
        return f"{WEIGHT_KEY} {weight!r} is not finite and positive"
    if weight > limits.max_examples:
        return f"{WEIGHT_KEY} {weight!r} is over the cap of {limits.max_examples:g}"
    return None


def _arrays(content: RecordDict) -> ArrayRecord:
    return next(iter(content.array_records.values()))


def update_norm(sent: RecordDict, reply: RecordDict) -> float:
    """L2 norm over all arrays of the reply's weights minus the weights sent (in float64)."""
    base, trained = _arrays(sent), _arrays(reply)
    total = 0.0
    for key, array in trained.items():
        delta = to_ndarray(array).astype(np.float64) - to_ndarray(base[key]).astype(np.float64)
        total += float(np.dot(delta.ravel(), delta.ravel()))
    return math.sqrt(total)


def check_reply(
    sent: RecordDict, reply: RecordDict, message_type: str, limits: Screening | None
) -> str | None:
    """Why this one reply cannot be aggregated, or None. ``limits`` None: only its structure
    (what Flower itself needs), as before screening existed; for measuring what it buys."""
    metrics = reply.metric_records
    if len(metrics) != 1:
        return f"expected one MetricRecord, got {len(metrics)}"
    record = next(iter(metrics.values()))
    if WEIGHT_KEY not in record:
        return f"metrics lack a positive {WEIGHT_KEY!r}"
    problem = check_weight(record[WEIGHT_KEY], limits)
    if problem is not None:
        return problem
    if limits is not None:
        bad = sorted(key for key, value in record.items() if not _finite(value))
        if bad:
            return f"metrics {', '.join(bad)} are not finite"
    if not message_type.startswith("train"):
        return None
    if len(reply.array_records) != 1:
        return f"expected one ArrayRecord, got {len(reply.array_records)}"
    expected = list(array_signature(sent).values())
    if expected and next(iter(array_signature(reply).values())) != expected[0]:
        return "arrays differ in keys, dtypes or shapes from the model sent"
    if limits is None or not expected:
        return None
    for key, array in _arrays(reply).items():
        values = to_ndarray(array)
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            return f"array {key!r} holds NaN or infinite values"
    norm = update_norm(sent, reply)
    if norm > limits.max_update_norm:
        return f"update norm {norm:.3g} is over the cap of {limits.max_update_norm:g}"
    return None


def norm_outliers(norms: dict[int, float], limits: Screening) -> dict[int, str]:
    """Which updates (by index) are over ``norm_factor`` times the median norm, and why."""
    if not norms:
        return {}
    median = float(np.median(list(norms.values())))
    if median <= 0:
        return {}  # most members did not move: nothing to measure a step against
    bound = limits.norm_factor * median
    return {
        i: f"update norm {norm:.3g} is over {limits.norm_factor:g}x the round's median {median:.3g}"
        for i, norm in norms.items()
        if norm > bound
    }


def as_error(reply: Message, reason: str) -> Message:
    """``reply`` turned into an Error reply (same ids), which stock strategies skip."""
    error = Error(ErrorCode.REPLY_MESSAGE_UNAVAILABLE, reason)
    return make_message(copy.copy(reply.metadata), error=error)


def screen_round(
    sent: list[Message],
    replies: list[Message],
    limits: Screening | None,
    who: Callable[[int], str],
) -> list[Message]:
    """The round's replies with those unlike the rest turned into Errors, each logged with
    ``who(src_node_id)``: metric keys unlike most replies', updates far above the median."""
    problems: dict[int, str] = {}
    keysets = {
        i: frozenset(next(iter(r.content.metric_records.values())).keys())
        for i, r in enumerate(replies)
        if r.has_content()
    }
    if keysets:
        usual, _ = Counter(keysets.values()).most_common(1)[0]
        problems.update(
            {i: "metric keys differ from others" for i, k in keysets.items() if k != usual}
        )
    if limits is not None:
        norms = {
            i: update_norm(sent[i].content, r.content)
            for i, r in enumerate(replies)
            if i not in problems
            and r.has_content()
            and r.metadata.message_type.startswith("train")
            and sent[i].content.array_records
        }
        problems.update(norm_outliers(norms, limits))
    for i, reason in problems.items():
        log.warning(
            "reply from member %s dropped: %s", who(replies[i].metadata.src_node_id), reason
        )
    return [as_error(r, problems[i]) if i in problems else r for i, r in enumerate(replies)]
