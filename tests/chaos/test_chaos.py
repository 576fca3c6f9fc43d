"""The chaos suite: 20 node processes, real SIGKILL/SIGSTOP, cut links and a partitioned LAN.

Runs on namespace hosts where the machine allows it (root, `ip netns`), else on loopback
without partitions. For longer runs: scripts/chaos.py --duration 3600 --seed N.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mycelium_p2p.testing.chaos import ChaosConfig, ChaosRun


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_twenty_peers_survive_kills_stops_cuts_and_partitions(tmp_path: Path) -> None:
    config = ChaosConfig(
        workdir=tmp_path,
        nodes=20,
        duration=180.0,
        seed=7,
        action_every=6.0,
        expect_consolidation=True,  # groups founded while cut off merge back after a heal
    )
    summary = ChaosRun(config).run(log=print)
    report = json.dumps(summary.as_json(), indent=1)
    print(report)
    assert summary.violations == [], report
    assert summary.rounds_lost == 0
    assert summary.kills >= 5 and summary.restarts >= 5
    assert summary.failovers >= 1  # a killed or stopped leader's group trained on
    assert summary.rounds_completed >= 100
    assert summary.errors_logged == 0, "a node logged a traceback; see the logs in " + str(
        tmp_path / "logs"
    )
    if summary.mode.startswith("netns"):
        assert summary.partitions >= 1 and summary.actions.get("cut-transfer", 0) >= 1
