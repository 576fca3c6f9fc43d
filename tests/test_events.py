"""One list of event kinds: what the CLI renders is a kind a node reports (``events.KINDS``)."""

from __future__ import annotations

import typing

from mycelium_p2p import events
from mycelium_p2p.cli.demo_view import SHOWN, DemoState, NodeView


def test_the_literal_type_the_constants_and_kinds_name_the_same_kinds() -> None:
    constants = {
        value for name, value in vars(events).items() if name.isupper() and isinstance(value, str)
    }
    assert constants == events.KINDS == set(typing.get_args(events.EventKind))


def test_every_kind_is_documented_in_the_module_docstring() -> None:
    doc = events.__doc__ or ""
    table = [line for line in doc.splitlines() if line.startswith("    ") and line[4] != " "]
    documented = [line.split()[0] for line in table]
    assert sorted(documented) == sorted(events.KINDS)  # each once, and no other


def test_every_kind_the_cli_renders_is_a_kind_a_node_reports() -> None:
    assert set(SHOWN) <= events.KINDS
    assert events.STOPPED in events.KINDS  # the kind ``join`` itself reports when it stops


def test_the_demo_ignores_an_unknown_or_malformed_kind() -> None:
    state = DemoState()
    state.nodes["a"] = NodeView("a", 0)
    for kind in ("no-such-kind", ["founded"], None):
        state.apply({"peer": "a", "kind": kind, "group": "g", "group_id": "1", "t": 1})
    assert state.nodes["a"].role == "starting" and state.nodes["a"].group_id is None
    assert set(state.groups) == {"1"}  # an event that names a group still makes it known
