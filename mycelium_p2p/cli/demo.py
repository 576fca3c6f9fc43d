"""``mycelium-p2p demo``: a whole network of real processes on loopback, live in the terminal.

A bootstrap peer and ``nodes`` full nodes (``mycelium-p2p join`` processes) over ``domains``
data domains (digits rotated by 0, 90, 180... degrees). One group per domain is founded, and
every group starts mixed: nodes of all domains. Then the network does what it does: leaders
train with Flower, nodes measure other groups' models on their own data and migrate, groups
become pure. Midway one leader is killed with SIGKILL; its group elects a new one and trains on,
and the killed node comes back. Everything on screen is read from the nodes' own event files
(``join --events``) and from the DHT.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from ..errors import LocalNetError
from ..node.seed import query_groups
from .demo_view import DemoState, NodeView, save_plot, summary, view
from .localnet import LocalNet

STARTUP_TIMEOUT = 120.0  # seconds for all node processes to start and enter groups
GROUP_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


@dataclass
class DemoConfig:
    """What the demo runs; the defaults take about two minutes on two cores."""

    nodes: int = 12
    domains: int = 3
    duration: float = 60.0  # seconds of training once every node is in a group
    evaluation_interval: float = 5.0
    round_pause: float = 0.5
    kill_leader: bool = True
    seed: int = 0
    out: Path = Path("mycelium-demo")
    live: bool = True


async def _wait_listed(
    net: LocalNet, seed: tuple[str, int], state: DemoState, n: int, stop: asyncio.Event
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and not stop.is_set():
        for event in net.new_events():
            state.apply(event)
        try:
            adverts = await query_groups([seed], timeout=5.0)
        except Exception:
            adverts = []
        state.listed = {a.group_id for a in adverts if a.metrics.members > 0}
        if len(state.listed) >= n:
            return
        await asyncio.sleep(0.5)
    if stop.is_set():
        return
    raise LocalNetError(f"the founders' {n} groups never appeared in the DHT")


async def run_demo(config: DemoConfig, console: Console, stop: asyncio.Event) -> dict[str, Any]:
    """Run the demo until ``duration`` passes or ``stop`` is set; returns the summary."""
    rng = random.Random(config.seed)
    state = DemoState()
    k = min(config.domains, len(GROUP_NAMES), config.nodes)
    per_domain = -(-config.nodes // k)
    names = [f"n{i:02d}" for i in range(config.nodes)]
    for i, name in enumerate(names):
        state.nodes[name] = NodeView(name, i % k)
    common = [
        "--round-pause",
        str(config.round_pause),
        "--evaluation-interval",
        str(config.evaluation_interval),
        "--heartbeat",
        "0.5",
        "--threads",
        "1",
        "--no-merge",  # the demo starts from mixed groups by design, to show migration sort them
    ]

    def options(i: int) -> list[str]:
        d = i % k
        shard = f"{i // k % per_domain}/{per_domain}"
        return ["--domain", str(d), "--data-shard", shard, *common]

    config.out.mkdir(parents=True, exist_ok=True)
    workdir = config.out / "run"
    exit_codes: dict[str, int | None] = {}
    result: dict[str, Any] = {}
    with LocalNet(workdir) as net:
        phase = "starting the bootstrap peer"
        live = Live(view(state, phase), console=console, refresh_per_second=4, transient=False)
        if config.live:
            live.start()
        try:
            seed = await asyncio.to_thread(net.start_bootstrap, "seed", "127.0.0.1", 0)
            state.note(f"bootstrap peer up on udp {seed[0]}:{seed[1]}")
            phase = "founding one group per domain"
            live.update(view(state, phase))
            for i in range(k):  # group i is founded by a node of domain i
                net.start_node(names[i], [seed], "--create", GROUP_NAMES[i], *options(i))
            # everyone else starts in a group of mixed domains; they start while the founders
            # do (starting a node is mostly importing torch) and find their groups a bit later
            for i in range(k, config.nodes):
                target = GROUP_NAMES[(i + i // k) % k]
                net.start_node(names[i], [seed], "--group", target, *options(i))
            await _wait_listed(net, seed, state, k, stop)
            phase = "nodes joining mixed groups"
            # the clock of --duration starts once every node is in a group
            t0 = time.monotonic() + STARTUP_TIMEOUT
            next_query, killed_node, restart_at = 0.0, None, None
            kill_at = float("inf")
            while time.monotonic() - t0 < config.duration and not stop.is_set():
                for event in net.new_events():
                    state.apply(event)
                if phase != "training and migrating" and all(
                    n.group_id for n in state.nodes.values()
                ):
                    phase = "training and migrating"
                    t0 = time.monotonic()
                    kill_at = t0 + config.duration * 0.5
                    state.note(f"all {config.nodes} nodes are in groups")
                if time.monotonic() >= next_query:
                    next_query = time.monotonic() + 3.0
                    try:
                        adverts = await query_groups([seed], timeout=3.0)
                        state.listed = {a.group_id for a in adverts if a.metrics.members > 0}
                    except Exception:
                        state.listed = set()
                if (
                    config.kill_leader
                    and killed_node is None
                    and phase == "training and migrating"
                    and time.monotonic() >= kill_at
                ):
                    late = time.monotonic() >= t0 + config.duration * 0.75
                    killed_node = _kill_a_leader(net, state, rng, any_group=late)
                    restart_at = time.monotonic() + 10.0
                if killed_node and restart_at and time.monotonic() >= restart_at:
                    restart_at = None
                    # same identity and data; it finds a group like any newcomer
                    net.start_node(killed_node, [seed], *options(names.index(killed_node)))
                    state.nodes[killed_node].role = "starting"
                    state.note(f"{killed_node} restarted (same identity and data)")
                for peer in net.peers.values():
                    if peer.returncode not in (None, -signal.SIGKILL) and peer.name != "seed":
                        state.nodes[peer.name].role = f"exited {peer.returncode}"
                if config.live:
                    live.update(view(state, phase))
                else:
                    _print_new_log(console, state)
                await asyncio.sleep(0.25)
            phase = "stopping: every node leaves its group"
            if config.live:
                live.update(view(state, phase))
            result = summary(state)  # the network as it trained, before everyone leaves
            exit_codes = await asyncio.to_thread(net.stop_all)
            result["pids"] = list(net.started_pids)
            for event in net.new_events():
                state.apply(event)
            if config.live:
                live.update(view(state, "stopped"))
        finally:
            if config.live:
                live.stop()
    if not config.live:
        _print_new_log(console, state)
    result["processes"] = len(exit_codes)
    result["exit_codes"] = exit_codes
    result["plot"] = str(save_plot(state, config.out / "demo.png"))
    (config.out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def _print_new_log(console: Console, state: DemoState) -> None:
    for line in state.log[state.printed :]:
        console.print(line)
    state.printed = len(state.log)


def _kill_a_leader(
    net: LocalNet, state: DemoState, rng: random.Random, *, any_group: bool
) -> str | None:
    """SIGKILL the leader of the largest group of two or more whose members share a domain:
    they stay and elect a successor (members of a mixed group may instead move on and leave
    it to dissolve). With ``any_group`` (late in the run) any group of two or more will do."""
    groups = [
        g
        for g in state.live_groups()
        if g.leader and sum(state.composition(g.group_id).values()) >= 2
    ]
    pure = [g for g in groups if len(state.composition(g.group_id)) == 1]
    groups = pure or (groups if any_group else [])
    if not groups:
        return None
    group = max(groups, key=lambda g: (sum(state.composition(g.group_id).values()), rng.random()))
    assert group.leader is not None
    peer = net.peers[group.leader]
    at = time.time()
    if not peer.signal(signal.SIGKILL):
        return None
    state.killed[group.group_id] = (at, group.term)
    state.kills.append((at, peer.name))
    state.nodes[peer.name].role = "killed"
    state.nodes[peer.name].group_id = None
    state.membership_trace.append((time.time(), peer.name, None))
    state.note(f"[red]SIGKILL {peer.name}, leader of {group.name} (term {group.term})[/]", at)
    return peer.name
