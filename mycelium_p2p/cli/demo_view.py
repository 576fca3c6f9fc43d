"""What the demo shows: its state, built only from the nodes' events, and its views.

``DemoState`` follows the events of every node (``join --events``); the tables, the summary and
the plot are drawn from it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from .. import events

Event = dict[str, Any]  # an event as ``join --events`` writes it, with LocalNet's "peer"


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
    kills: list[tuple[float, str]] = field(default_factory=list)  # (t, node) of each SIGKILL
    web_url: str | None = None  # where the network's web view is served
    moves: int = 0
    printed: int = 0  # log lines already printed (without the live view)

    def note(self, text: str, at: float | None = None) -> None:
        stamp = (at or time.time()) - self.started
        self.log.append(f"[dim]{stamp:6.1f}s[/] {text}")

    def _group(self, event: dict[str, Any]) -> GroupView | None:
        gid = event.get("group_id")
        if not gid:
            return None
        # group names come from the network: shown as text, never as rich markup
        view = self.groups.setdefault(gid, GroupView(gid, escape(str(gid)[:8])))
        if event.get("group"):
            view.name = escape(str(event["group"]))
        return view

    def _member_of(self, node: NodeView, gid: str | None, at: float) -> None:
        node.group_id = gid
        self.membership_trace.append((at, node.name, gid))

    def apply(self, event: Event) -> None:
        """Follow one node's event: the kinds in ``SHOWN`` change what the demo shows."""
        node = self.nodes.get(event.get("peer", ""))
        if node is None:
            return
        group = self._group(event)  # any event that names a group makes it known
        kind = event.get("kind")
        show = SHOWN.get(kind) if isinstance(kind, str) else None
        if show is not None:
            show(self, node, group, event, float(event.get("t", time.time())))

    def _founded(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        if group is None:
            return
        self._member_of(node, group.group_id, at)
        node.role = "leader"
        group.leader = node.name
        self.note(f"{node.name} (domain {node.domain}) founded [bold]{group.name}[/]", at)

    def _joined(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        if group is None:
            return
        self._member_of(node, group.group_id, at)
        node.role = "member"
        self.note(f"{node.name} (domain {node.domain}) joined {group.name}", at)

    def _leader(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        if group is None:
            return
        self._member_of(node, group.group_id, at)
        node.role = "leader"
        if group.leader != node.name and group.leader is not None:
            self.note(f"{node.name} elected leader of {group.name}, term {event.get('term')}", at)
        group.leader, group.term = node.name, int(event.get("term", 0))
        if group.group_id in self.killed:
            t_kill, term = self.killed[group.group_id]
            if group.term > term:
                del self.killed[group.group_id]
                self.failovers.append(at - t_kill)
                self.note(f"[green]{group.name} failed over in {at - t_kill:.1f} s[/]", at)

    def _follower(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        node.role = "member"

    def _round(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        if group is None:
            return
        group.round = int(event.get("round", 0))
        group.term = int(event.get("term", group.term))
        group.accuracy = float(event.get("accuracy", 0.0))
        group.leader = node.name

    def _evaluated(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        acc = float(event.get("accuracy", 0.0))
        node.accuracy = acc
        if node.first_accuracy is None:
            node.first_accuracy = acc
        self.accuracy_trace.append((at, node.name, acc))

    def _moving(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        node.moves += 1
        self.moves += 1
        node.role = "moving"
        self.note(
            f"[yellow]{node.name} (domain {node.domain}) migrates {group.name if group else '?'} "
            f"-> {escape(str(event.get('to')))}[/]: {escape(str(event.get('reason', '')))}",
            at,
        )

    def _split(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
        name = group.name if group else "?"
        self.note(f"[magenta]{name} splits: {event.get('leaving')} member(s) leave[/]", at)

    def _stopped(self, node: NodeView, group: GroupView | None, event: Event, at: float) -> None:
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


#: How the demo shows each kind of event it shows (an event of another kind only names its
#: group, if it has one).
SHOWN: dict[str, Callable[[DemoState, NodeView, GroupView | None, Event, float], None]] = {
    events.FOUNDED: DemoState._founded,
    events.JOINED: DemoState._joined,
    events.LEADER: DemoState._leader,
    events.FOLLOWER: DemoState._follower,
    events.ROUND: DemoState._round,
    events.EVALUATED: DemoState._evaluated,
    events.MOVING: DemoState._moving,
    events.SPLIT: DemoState._split,
    events.STOPPED: DemoState._stopped,
}


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
    title = "mycelium-p2p demo" + (f" - web view {state.web_url}" if state.web_url else "")
    return Group(
        Panel(head, title=title),
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
    rows = {name: row for row, name in enumerate(state.nodes)}
    for t, name in state.kills:
        bottom.plot(t - state.started, rows[name], "x", color="red", markersize=10, mew=2)
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
