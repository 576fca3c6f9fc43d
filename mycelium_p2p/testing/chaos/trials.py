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


def _pump_due(run: ChaosRun, seconds: float, until: Callable[[], bool] | None = None) -> bool:
    """Follow events, do what is due (restarts) and run checks for up to ``seconds``; True as
    soon as ``until`` holds."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        run._follow()
        now = time.monotonic()
        for item in [p for p in run.pending if p[0] <= now]:
            run.pending.remove(item)
            item[2]()
        run._run_checks()
        if until is not None and until():
            return True
        time.sleep(0.2)
    return False


def _settle(
    run: ChaosRun, count: int, healed_at: float, settle: float
) -> tuple[float | None, float | None]:
    """Seconds from the heal until the network had no more than ``count`` groups (and kept
    so), and until every domain was in as few groups as its nodes fit in, past the founding
    window (None: not within ``settle`` s)."""
    window = healed_at + FOUNDING_WINDOW
    ok_since: list[float] = []

    def whole() -> bool:
        now = time.time()
        if run.group_count() > count:
            ok_since.clear()
        elif not ok_since:
            ok_since.append(now)
        return now >= window and bool(ok_since) and not run.surplus_groups(ungrouped=True)

    done = _pump_due(run, settle, whole)
    fewer = round(max(0.0, ok_since[0] - healed_at), 1) if ok_since else None
    return fewer, (round(time.time() - healed_at, 1) if done else None)


def leaderless_trials(
    run: ChaosRun,
    trials: int,
    *,
    seconds: float = 8.0,
    settle: float = 60.0,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """``trials`` times: SIGKILL a group's leader (restarted 4 s later) and at once cut the
    LAN in two with half of that group's other members on each side, so that neither half
    holds a majority of its roster: both regroup, and the group's data domain ends up in
    groups founded on both sides. Heal after ``seconds``; time until the network has no more
    groups than before (the chaos suite's consolidation check runs too) and until every
    domain is in as few groups as its nodes fit in. Needs namespaces."""
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
            _pump_due(run, run.config.startup_timeout, consolidated)
            count = run.group_count()
            gid, leader = run.rng.choice(run._leaders())
            members = sorted(
                p for p, (g, _) in run.invariants.role.items()
                if g == gid and p != leader and run._alive(p)
            )  # fmt: skip
            run.rng.shuffle(members)
            half = members[: len(members) // 2]
            others = [n for n in run.nodes if n not in members and n != leader]
            side = half + run.rng.sample(others, len(run.nodes) // 2 - len(half))
            run.harm.kill(leader, 4.0)
            cut_at = time.time()
            lan.partition([run.host_of[n] for n in [*run.seeds[1:2], *side]])
            run.partitioned = True
            _pump_due(run, seconds)
            lan.heal()
            healed_at = time.time()
            run.partitioned = False
            run._expect_healed()
            run._expect_consolidated(cut_at, healed_at, count)
            window = healed_at + FOUNDING_WINDOW
            fewer, whole = _settle(run, count, healed_at, settle)
            founded = {g for at, _, g in run.founded if cut_at <= at <= window}
            result = {
                "trial": trial + 1,
                "leader": leader,
                "split": sorted(half),
                "founded_while_cut": len(founded),
                "as_few_groups_s": fewer,
                "domains_whole_s": whole,
                "violations": len(run.summary.violations),
                "rounds_lost": run.summary.rounds_lost,
            }
            results.append(result)
            log(f"trial {trial + 1}: {result}")
    finally:
        run.net.stop_all()
        run.summary.errors_logged = run._errors_logged()
        if run.lan is not None:
            run.lan.teardown()
    return results
