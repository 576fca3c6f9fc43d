"""``--log-format json``: every line a node prints is one JSON object, with the node's facts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mycelium_p2p import logcontext
from mycelium_p2p.testing.procs import CLI, Proc, processes


def test_a_record_carries_the_facts_bound_in_its_context() -> None:
    record = logging.LogRecord("mycelium_p2p.x", logging.INFO, __file__, 1, "hi %s", ("a",), None)
    formatter = logcontext.JsonFormatter()
    assert json.loads(formatter.format(record))["msg"] == "hi a"
    assert "node" not in json.loads(formatter.format(record))
    token = logcontext.bind(lambda: {"node": "n1", "group": "g", "term": 2, "round": 7})
    try:
        line = json.loads(formatter.format(record))
    finally:
        logcontext.unbind(token)
    assert line["node"] == "n1" and (line["group"], line["term"], line["round"]) == ("g", 2, 7)
    assert line["level"] == "INFO" and line["logger"] == "mycelium_p2p.x"


def test_extended_facts_add_to_the_node_s_and_win_over_them() -> None:
    record = logging.LogRecord("mycelium_p2p.x", logging.INFO, __file__, 1, "hi", (), None)
    outer = logcontext.bind(lambda: {"node": "n1"})  # the node, between groups
    inner = logcontext.extend(lambda: {"group": "g", "term": 3})  # a leader's rounds
    try:
        line = json.loads(logcontext.JsonFormatter().format(record))
    finally:
        logcontext.unbind(inner)
        logcontext.unbind(outer)
    assert (line["node"], line["group"], line["term"]) == ("n1", "g", 3)


def test_a_node_prints_only_json_lines_with_its_group_term_and_round(tmp_path: Path) -> None:
    args = ["--log-format", "json", "-vv", "join", "--create", "solo", "--host", "127.0.0.1"]
    with processes() as procs:
        node = Proc([*CLI, *args, "--round-pause", "0.2", "--data-dir", str(tmp_path)])
        procs.append(node)
        node.expect(r"\"msg\": \"round 3 ", timeout=90)
        assert node.stop() == 0
    lines = [json.loads(line) for line in node.lines if line.strip()]  # each one parses
    rounds = [line for line in lines if line.get("kind") == "round"]
    assert rounds and all(line["node"] and line["term"] == 1 for line in rounds)
    # -vv: Flower's chatter too, logged in the leader's strategy thread with the node's facts
    flower = [line for line in lines if line.get("logger") == "mycelium_p2p.fl.flower"]
    assert flower and all(line["node"] and line["term"] == 1 for line in flower), flower[:3]
