"""The formation benchmark's partition arm (scripts/bench_formation.py --partition): a chaos
run's network, cut and healed again and again with no other harm, timed until it consolidates."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import netns
from .config import FOUNDING_WINDOW

if TYPE_CHECKING:
    from .run import ChaosRun


def partition_trials(
    run: ChaosRun,
    trials: int,
    *,
    cut: tuple[int, int] = (2, 5),
    seconds: float = 20.0,
    settle: float = 60.0,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """The formation benchmark's partition arm, on one network (no other harm): ``trials``
    times, cut ``cut[0]``..``cut[1]`` random nodes off for ``seconds``, heal, and time how
    long until every live node is in a group and each domain is in as few groups as its
    nodes fit in (at most ``settle`` s). Needs namespaces."""
    results: list[dict[str, Any]] = []
    try:
        run.start()
        if run.lan is None:
            raise netns.NetnsUnavailable("partitions need network namespaces")
        lan = run.lan
        log(f"{run.config.nodes} nodes in groups after {run.summary.time_to_all_in_groups:.1f} s")

        def consolidated() -> bool:
            return not run.surplus_groups(ungrouped=True)

        for trial in range(trials):
            settled = run._pump(run.config.startup_timeout, consolidated)
            before = {d: sorted(g) for d, g in run.domain_groups().items()}
            lost = run.summary.rounds_lost
            count = run.group_count()
            side = sorted(run.rng.sample(run.nodes, run.rng.randint(*cut)))
            cut_at = time.time()
            lan.partition([run.host_of[n] for n in side])
            run.partitioned = True
            run._pump(seconds)
            lan.heal()
            healed_at = time.time()
            run.partitioned = False
            run._expect_healed()
            run._expect_consolidated(cut_at, healed_at, count)
            at_heal = sum(len(g) for g in run.domain_groups().values())
            took = run._pump(settle, consolidated)
            window = healed_at + FOUNDING_WINDOW
            founded = {g for at, _, g in run.founded if cut_at <= at <= window}
            result = {
                "trial": trial + 1,
                "cut": side,
                "settled_before": settled is not None,
                "groups_before": sum(len(g) for g in before.values()),
                "founded_while_cut": len(founded),
                "groups_at_heal": at_heal,
                "groups_end": sum(len(g) for g in run.domain_groups().values()),
                "ideal": sum(run._fewest(d) for d in range(run.config.domains)),
                "consolidated_s": None if took is None else round(took, 2),
                "rounds_lost": run.summary.rounds_lost - lost,
            }
            results.append(result)
            log(f"trial {trial + 1}: {result}")
    finally:
        run.net.stop_all()
        run.summary.errors_logged = run._errors_logged()
        if run.lan is not None:
            run.lan.teardown()
    return results
