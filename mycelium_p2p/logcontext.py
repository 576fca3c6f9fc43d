"""Structured logs: which node (and its group, term and round) a log record comes from.

Many nodes may share a process, so the node a record belongs to is not a global: ``Node.start``
binds a function returning its facts in a ``ContextVar``, and every task the node starts from
there inherits it (asyncio copies the context into each task it creates). ``JsonFormatter``
(``--log-format json``) reads it when a record is formatted, in the task that logged it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["JsonFormatter", "bind", "current", "extend", "unbind"]

Facts = Callable[[], dict[str, Any]]

#: the facts of the node whose task is running (None outside any node's tasks)
_FACTS: ContextVar[Facts | None] = ContextVar("mycelium_p2p_log_facts", default=None)


def bind(facts: Facts) -> Token[Facts | None]:
    """Tasks created from now on in this context log with ``facts()``; ``unbind`` the token
    to stop tagging the caller's own later records."""
    return _FACTS.set(facts)


def extend(more: Facts) -> Token[Facts | None]:
    """Like ``bind``, on top of the facts already bound: ``more()`` adds to them or overrides
    them (a leader's rounds log with the group they serve, even while the node leaves it)."""
    outer = _FACTS.get()

    def facts() -> dict[str, Any]:
        return {**(outer() if outer is not None else {}), **more()}

    return _FACTS.set(facts)


def unbind(token: Token[Facts | None]) -> None:
    _FACTS.reset(token)


def current() -> dict[str, Any]:
    """The running node's facts (node, group, term, round), or nothing."""
    facts = _FACTS.get()
    if facts is None:
        return {}
    try:
        return facts()
    except Exception:  # a log line must never fail because the node is half torn down
        return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the node's facts, and the
    traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "t": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **current(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
