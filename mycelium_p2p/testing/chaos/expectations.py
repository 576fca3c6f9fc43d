"""What must become true after a chaos run did harm, as ``Check``s: the groups listed again
after a kill (``listed_check``); after a partition heals, one network again
(``healed_check``) and the groups founded while cut off merged back (``consolidated_check``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .config import FOUNDING_WINDOW
from .invariants import Check

if TYPE_CHECKING:
    from .run import ChaosRun


def listed_check(run: ChaosRun, what: str) -> Check:
    """Within ``discovery_deadline`` of ``what`` (a kill): an observer lists every live group
    that was listed before."""
    started = time.monotonic()
    # groups already listed: a kill must not make them vanish (new ones: _check_new_groups)
    wanted = run._live_groups() & run.observed.ever_listed

    def listed_since() -> set[str]:
        out: set[str] = set()
        for at, groups in run.observed.listings.values():
            if at > started:
                out |= groups
        return out

    def passed(took: float) -> None:
        run.summary.worst_discovery_gap = max(run.summary.worst_discovery_gap, took)

    return Check(
        f"groups {sorted(wanted)} listed after {what}",
        started,
        started + run.config.discovery_deadline,
        lambda: wanted & run._live_groups() <= listed_since(),
        passed,
        lambda: f"missing: {sorted(wanted & run._live_groups() - listed_since())}",
    )


def healed_check(run: ChaosRun) -> Check:
    """Within ``heal_deadline``: both halves list every live group, and no group has two
    leaders."""
    started = time.monotonic()
    existing = set(run.invariants.last_round)  # groups born after the heal may lag

    def views() -> list[set[str]]:
        return [g for at, g in run.observed.listings.values() if at > started]

    def split_leaders() -> dict[str, set[str]]:
        leaders = run.invariants.leaders(lambda p: run._alive(p) and p not in run.stopped)
        return {g: peers for g, peers in leaders.items() if len(peers) > 1}

    def one_network() -> bool:
        """Both halves list every live group, and no group has two leaders."""
        fresh = views()
        if len(fresh) < len(run.observed.listings) or not fresh:
            return False
        live = run._live_groups() & existing
        return all(live <= g for g in fresh) and not split_leaders()

    def explain() -> str:
        live = run._live_groups() & existing
        missing = " / ".join(str(sorted(live - g)) for g in views()) or "no fresh listing"
        return f"live groups missing per observer: {missing}; split: {split_leaders()}"

    def passed(took: float) -> None:
        run.summary.worst_heal = max(run.summary.worst_heal, took)

    return Check(
        "one network and one leader per group after healing",
        started,
        started + run.config.heal_deadline,
        one_network,
        passed,
        explain,
    )


def consolidated_check(run: ChaosRun, cut_at: float, healed_at: float, before: int) -> Check | None:
    """Groups founded while the LAN was cut merge back: within ``consolidate_deadline`` of
    the heal the network has no more groups than the ``before`` it had when cut, and keeps
    so past ``FOUNDING_WINDOW`` after the heal (a join tried while cut off has to time out
    before its node founds a group). Counted over groups, not domains: a node that
    regrouped may sit in another domain's group until migration moves it home. None when
    the nodes do not merge."""
    if not run.config.merge:
        return None
    window_end = healed_at + FOUNDING_WINDOW
    ok_since: list[float] = []  # when the network last had few enough groups
    counted: list[bool] = []

    def count_founded() -> None:
        if not counted:
            counted.append(True)
            founded = {g for at, _, g in run.founded if cut_at <= at <= window_end}
            run.summary.founded_while_cut += len(founded)

    def settled() -> bool:
        now = time.time()
        if run.group_count() > before:
            ok_since.clear()
            return False
        if not ok_since:
            ok_since.append(now)
        return now >= window_end

    def passed(_: float) -> None:
        count_founded()
        took = max(0.0, ok_since[0] - healed_at)
        run.summary.worst_consolidation = max(run.summary.worst_consolidation, took)

    def explain() -> str:
        count_founded()
        groups = {d: sorted(g) for d, g in run.domain_groups().items()}
        return f"{run.group_count()} groups, {before} before the cut: {groups}"

    started = time.monotonic() - (time.time() - healed_at)
    return Check(
        "groups founded while cut off merged back after the heal",
        started,
        started + run.config.consolidate_deadline,
        settled,
        passed,
        explain,
        soft=not run.config.expect_consolidation,
    )
