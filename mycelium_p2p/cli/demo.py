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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from ..node.seed import query_groups
from .localnet import LocalNet, LocalNetError

STARTUP_TIMEOUT = 120.0  # seconds for all node processes to start and enter groups
GROUP_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


@dataclass
class DemoConfig:
    """What the demo runs; the defaults take about two minutes on two cores."""

    nodes: int = 12
    domains: int = 3
    duration: float = 90.0  # seconds of training once every node is up
    evaluation_interval: float = 5.0
    round_pause: float = 0.5
    kill_leader: bool = True
    seed: int = 0
    out: Path = Path("mycelium-demo")
    live: bool = True


@dataclass
class NodeView:
    name: str
    domain: int
    group_id: str | None = None
    role: str = "starting"
    accuracy: float | None = None
    first_accuracy: float | None = None
    moves: int = 0


@dataclass
class GroupView:
    group_id: str
    name: str
    leader: str | None = None
    term: int = 0
    round: int = 0
    accuracy: float | None = None


@dataclass
class DemoState:
    """What the demo knows, built only from the nodes' events."""

    nodes: dict[str, NodeView] = field(default_factory=dict)
    groups: dict[str, GroupView] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    accuracy_trace: list[tuple[float, str, float]] = field(default_factory=list)
    membership_trace: list[tuple[float, str, str | None]] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    failovers: list[float] = field(default_factory=list)
    killed: dict[str, tuple[float, int]] = field(default_factory=dict)  # group_id -> (t, term)
    moves: int = 0
    printed: int = 0  # log lines already printed (without the live view)

    def note(self, text: str, at: float | None = None) -> None:
        stamp = (at or time.time()) - self.started
        self.log.append(f"[dim]{stamp:6.1f}s[/] {text}")

    def _group(self, event: dict[str, Any]) -> GroupView | None:
        gid = event.get("group_id")
        if not gid:
            return None
        view = self.groups.setdefault(gid, GroupView(gid, event.get("group") or gid[:8]))
        if event.get("group"):
            view.name = event["group"]
        return view

    def _member_of(self, node: NodeView, gid: str | None, at: float) -> None:
        node.group_id = gid
        self.membership_trace.append((at, node.name, gid))

    def apply(self, event: dict[str, Any]) -> None:
        node = self.nodes.get(event.get("peer", ""))
        if node is None:
            return
        kind, at = event.get("kind"), float(event.get("t", time.time()))
        group = self._group(event)
        name = group.name if group else "?"
        if kind == "founded" and group:
            self._member_of(node, group.group_id, at)
            node.role = "leader"
            group.leader = node.name
            self.note(f"{node.name} (domain {node.domain}) founded [bold]{name}[/]", at)
        elif kind == "joined" and group:
            self._member_of(node, group.group_id, at)
            node.role = "member"
            self.note(f"{node.name} (domain {node.domain}) joined {name}", at)
        elif kind == "leader" and group:
            self._member_of(node, group.group_id, at)
            node.role = "leader"
            if group.leader != node.name and group.leader is not None:
                self.note(f"{node.name} elected leader of {name}, term {event.get('term')}", at)
            group.leader, group.term = node.name, int(event.get("term", 0))
            if group.group_id in self.killed:
                t_kill, term = self.killed[group.group_id]
                if group.term > term:
                    del self.killed[group.group_id]
                    self.failovers.append(at - t_kill)
                    self.note(f"[green]{name} failed over in {at - t_kill:.1f} s[/]", at)
        elif kind == "follower":
            node.role = "member"
        elif kind == "round" and group:
            group.round = int(event.get("round", 0))
            group.term = int(event.get("term", group.term))
            group.accuracy = float(event.get("accuracy", 0.0))
            group.leader = node.name
        elif kind == "evaluated":
            acc = float(event.get("accuracy", 0.0))
            node.accuracy = acc
            if node.first_accuracy is None:
                node.first_accuracy = acc
            self.accuracy_trace.append((at, node.name, acc))
        elif kind == "moving":
            node.moves += 1
            self.moves += 1
            node.role = "moving"
            self.note(
                f"[yellow]{node.name} (domain {node.domain}) migrates {name} -> "
                f"{event.get('to')}[/]: {event.get('reason', '')}",
                at,
            )
        elif kind == "split":
            self.note(f"[magenta]{name} splits: {event.get('leaving')} member(s) leave[/]", at)
        elif kind == "stopped":
            node.role = "stopped"
            self._member_of(node, None, at)

    def composition(self, gid: str) -> Counter[int]:
        return Counter(n.domain for n in self.nodes.values() if n.group_id == gid)

    def live_groups(self) -> list[GroupView]:
        return sorted(
            (g for g in self.groups.values() if self.composition(g.group_id)),
            key=lambda g: g.name,
        )

    def purity(self) -> float:
        """Share of grouped nodes that sit with the majority domain of their group."""
        total = majority = 0
        for g in self.live_groups():
            comp = self.composition(g.group_id)
            total += sum(comp.values())
            majority += max(comp.values())
        return majority / total if total else 0.0


def _domains_text(comp: Counter[int]) -> str:
    return " ".join(f"d{d}×{n}" for d, n in sorted(comp.items()))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def groups_view(state: DemoState) -> Table:
    table = Table(title="groups (from the leaders' rounds; ✓ = listed in the DHT)", expand=True)
    for col in ("group", "members", "domains", "leader", "term", "round", "accuracy", "DHT"):
        table.add_column(col, justify="right" if col in ("term", "round", "accuracy") else "left")
    for g in state.live_groups():
        comp = state.composition(g.group_id)
        pure = len(comp) == 1
        table.add_row(
            f"[bold]{g.name}[/]",
            str(sum(comp.values())),
            f"[green]{_domains_text(comp)}[/]" if pure else _domains_text(comp),
            g.leader or "-",
            str(g.term),
            str(g.round),
            _pct(g.accuracy),
            "✓" if g.group_id in state.listed else "",
        )
    return table


def nodes_view(state: DemoState) -> Table:
    table = Table(title="nodes (accuracy of their group's model on their own data)", expand=True)
    for col in ("node", "domain", "group", "role", "own acc", "moves"):
        table.add_column(col, justify="right" if col in ("own acc", "moves") else "left")
    for n in state.nodes.values():
        group = state.groups.get(n.group_id or "")
        table.add_row(
            n.name,
            str(n.domain),
            group.name if group else "-",
            n.role,
            _pct(n.accuracy),
            str(n.moves),
        )
    return table


def view(state: DemoState, phase: str) -> Group:
    head = Table.grid(padding=(0, 3))
    alive = sum(1 for n in state.nodes.values() if n.role not in ("starting", "stopped", "killed"))
    head.add_row(
        f"[bold]{phase}[/]",
        f"nodes in groups {alive}/{len(state.nodes)}",
        f"groups {len(state.live_groups())}",
        f"purity {state.purity():.0%}",
        f"migrations {state.moves}",
        f"{time.time() - state.started:.0f} s",
    )
    return Group(
        Panel(head, title="mycelium-p2p demo"),
        groups_view(state),
        nodes_view(state),
        Panel("\n".join(state.log[-10:]) or "starting...", title="events"),
    )


def summary(state: DemoState) -> dict[str, Any]:
    """The demo's result: groups, accuracy per domain at the start and the end, failovers."""
    domains = sorted({n.domain for n in state.nodes.values()})
    per_domain = {}
    for d in domains:
        ns = [n for n in state.nodes.values() if n.domain == d]
        first = [n.first_accuracy for n in ns if n.first_accuracy is not None]
        last = [n.accuracy for n in ns if n.accuracy is not None]
        per_domain[str(d)] = {
            "first": sum(first) / len(first) if first else None,
            "last": sum(last) / len(last) if last else None,
            "moves": sum(n.moves for n in ns),
        }
    return {
        "groups": [
            {
                "name": g.name,
                "domains": {str(d): c for d, c in state.composition(g.group_id).items()},
                "round": g.round,
                "accuracy": g.accuracy,
            }
            for g in state.live_groups()
        ],
        "purity": state.purity(),
        "migrations": state.moves,
        "domains": per_domain,
        "failover_seconds": list(state.failovers),
    }


def summary_table(result: dict[str, Any]) -> Table:
    table = Table(title="demo summary: own-data accuracy per domain", title_justify="left")
    for col in ("domain", "first measured", "at the end", "migrations"):
        table.add_column(col, justify="right")
    for d, row in result["domains"].items():
        table.add_row(d, _pct(row["first"]), _pct(row["last"]), str(row["moves"]))
    table.caption = (
        f"{len(result['groups'])} groups, purity {result['purity']:.0%}, "
        f"{result['migrations']} migrations"
        + (
            f", leader failover {', '.join(f'{s:.1f} s' for s in result['failover_seconds'])}"
            if result["failover_seconds"]
            else ""
        )
    )
    return table


def save_plot(state: DemoState, path: Path) -> Path | None:
    """Own-data accuracy over time (per domain) and each node's group over time."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    colours = plt.get_cmap("tab10")
    domain_of = {n.name: n.domain for n in state.nodes.values()}
    for name in state.nodes:
        points = [(t - state.started, a) for t, n, a in state.accuracy_trace if n == name]
        if points:
            xs, ys = zip(*points, strict=True)
            top.plot(xs, ys, ".-", color=colours(domain_of[name]), alpha=0.6, lw=1)
    for d in sorted(set(domain_of.values())):
        top.plot([], [], color=colours(d), label=f"domain {d}")
    top.set_ylabel("group model on own data")
    top.set_ylim(0, 1)
    top.legend(loc="lower right")
    top.set_title("mycelium-p2p demo: nodes measure groups on their own data and migrate")
    group_ids = sorted({g for _, _, g in state.membership_trace if g})
    group_colour = {g: colours(i % 10) for i, g in enumerate(group_ids)}
    end = time.time() - state.started
    for row, name in enumerate(state.nodes):
        spans = [(t - state.started, g) for t, n, g in state.membership_trace if n == name]
        ends = [t for t, _ in spans[1:]] + [end] if spans else []
        for (t0, g), t1 in zip(spans, ends, strict=True):
            if g:
                bottom.barh(row, t1 - t0, left=t0, color=group_colour[g], height=0.8)
    bottom.set_yticks(range(len(state.nodes)))
    bottom.set_yticklabels([f"{n} d{domain_of[n]}" for n in state.nodes], fontsize=7)
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("group of each node")
    from matplotlib.patches import Patch

    handles = [
        Patch(color=colour, label=state.groups[g].name if g in state.groups else g[:8])
        for g, colour in group_colour.items()
    ]
    bottom.legend(handles=handles, loc="upper left", fontsize=7, ncol=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
            await _wait_listed(net, seed, state, k, stop)
            phase = "nodes joining mixed groups"
            for i in range(k, config.nodes):  # everyone else starts in a group of mixed domains
                target = GROUP_NAMES[(i + i // k) % k]
                net.start_node(names[i], [seed], "--group", target, *options(i))
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
                    killed_node = _kill_a_leader(net, state, rng)
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


def _kill_a_leader(net: LocalNet, state: DemoState, rng: random.Random) -> str | None:
    groups = [g for g in state.live_groups() if g.leader and len(state.composition(g.group_id)) > 0]
    groups = [g for g in groups if sum(state.composition(g.group_id).values()) >= 2]
    if not groups:
        return None
    group = max(groups, key=lambda g: (sum(state.composition(g.group_id).values()), rng.random()))
    assert group.leader is not None
    peer = net.peers[group.leader]
    at = time.time()
    if not peer.signal(signal.SIGKILL):
        return None
    state.killed[group.group_id] = (at, group.term)
    state.nodes[peer.name].role = "killed"
    state.nodes[peer.name].group_id = None
    state.membership_trace.append((time.time(), peer.name, None))
    state.note(f"[red]SIGKILL {peer.name}, leader of {group.name} (term {group.term})[/]", at)
    return peer.name
