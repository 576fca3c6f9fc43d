"""The example in docs/testing.md runs as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def test_the_simulated_network_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    section = DOC.read_text().split("## The simulated network", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "no python example in the section"
    exec(compile(match.group(1), str(DOC), "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "simulated 6" in out and "NetworkStats(" in out
