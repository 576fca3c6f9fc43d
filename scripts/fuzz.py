#!/usr/bin/env python3
"""Long fuzz runs: every parser a peer reaches and every file a user passes, with hypothesis.

The targets and their structure-aware strategies are ``tests/fuzz/`` (the test suite runs a
few hundred inputs of each). Here each target gets ``--inputs`` inputs (default 100,000) or
``--seconds``, whichever ends first, in chunks of ``--chunk`` with a new seed each (so
hypothesis's memory stays bounded and no chunk repeats another), ``--batch`` inputs drawn per
hypothesis example (its per-example bookkeeping costs more than a parser call). Nothing is
shrunk: every failure is counted and the first few are printed with their input. Per target::

    target  inputs  crashes  hangs  invalid  slowest_ms  inputs/s  outcomes

``crashes``: an exception other than the target's documented errors; ``hangs``: an input over
``HANG_SECONDS`` (10 s; every input is interrupted there); ``invalid``: an invalid record,
invite, setting or dataset accepted or stored. Exit status 1 if any of them is not zero.

    PYTHONPATH=. python scripts/fuzz.py --target all --inputs 100000 [--seconds S] [--seed N]
    PYTHONPATH=. python scripts/fuzz.py --list
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.harness import Context, Target, Verdict, run_one
from tests.fuzz.targets import TARGETS

FAILURES = ("crash", "hang", "invalid")


@dataclass
class Tally:
    inputs: int = 0
    slowest: float = 0.0
    slowest_input: Any = None
    outcomes: Counter[str] = field(default_factory=Counter)
    examples: list[tuple[Verdict, Any]] = field(default_factory=list)

    def add(self, verdict: Verdict, value: Any) -> None:
        self.inputs += 1
        if verdict.seconds > self.slowest:
            self.slowest, self.slowest_input = verdict.seconds, value
        self.outcomes[verdict.outcome] += 1
        if verdict.outcome in FAILURES and len(self.examples) < 3:
            self.examples.append((verdict, value))


class _Stop(Exception):
    """Out of time: ends a chunk early."""


def fuzz(
    target: Target, inputs: int, seconds: float, chunk: int, batch: int, first_seed: int
) -> Tally:
    tally = Tally()
    ctx = Context()
    ends = time.monotonic() + seconds
    number = 0
    try:
        while tally.inputs < inputs and time.monotonic() < ends:
            size = -(-min(chunk, inputs - tally.inputs) // batch)

            @seed(first_seed + number)
            @settings(
                max_examples=size,
                database=None,
                deadline=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(st.lists(target.strategy(), min_size=batch, max_size=batch))
            def run(values: list[Any]) -> None:
                for value in values:
                    if time.monotonic() >= ends or tally.inputs >= inputs:
                        raise _Stop
                    tally.add(run_one(target, value, ctx), value)

            try:
                run()
            except _Stop:
                break
            number += 1
    finally:
        ctx.close()
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="all", help="a target name, or 'all'")
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=3600.0, help="per target")
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=4, help="inputs per hypothesis example")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--show-slowest", action="store_true", help="print each slowest input")
    args = parser.parse_args()
    if args.list:
        for target in TARGETS.values():
            print(f"{target.name:13} {target.what}")
        return 0
    names = sorted(TARGETS) if args.target == "all" else args.target.split(",")
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; --list shows them")
    logging.disable(logging.CRITICAL)  # refused inputs are logged by design
    print(f"{'target':13} {'inputs':>7} {'crashes':>7} {'hangs':>5} {'invalid':>7}"
          f" {'slowest_ms':>10} {'inputs/s':>8}  outcomes")  # fmt: skip
    failed = False
    for name in names:
        started = time.monotonic()
        tally = fuzz(TARGETS[name], args.inputs, args.seconds, args.chunk, args.batch, args.seed)
        rate = tally.inputs / max(time.monotonic() - started, 1e-9)
        o = tally.outcomes
        ok = {k: v for k, v in sorted(o.items()) if k not in FAILURES}
        print(
            f"{name:13} {tally.inputs:>7} {o['crash']:>7} {o['hang']:>5} {o['invalid']:>7}"
            f" {tally.slowest * 1000:>10.1f} {rate:>8.0f}  {ok}",
            flush=True,
        )
        if args.show_slowest:
            print(f"  slowest input: {tally.slowest_input!r:.300}")
        for verdict, value in tally.examples:
            failed = True
            print(f"  {verdict.outcome}: {verdict.error!r:.300}\n    input: {value!r:.500}")
        failed = failed or any(o[k] for k in FAILURES)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
