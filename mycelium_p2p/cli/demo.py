"""``mycelium-p2p demo``: a whole network of real processes on loopback, live in the terminal.

A bootstrap peer and ``nodes`` full nodes (``mycelium-p2p join`` processes) over ``domains``
data domains (digits rotated by 0, 90, 180... degrees). One group per domain is founded, and
every group starts mixed: nodes of all domains. Then the network does what it does: leaders
train with Flower, nodes measure other groups' models on their own data and migrate, groups
become pure. Midway one leader is killed with SIGKILL; its group elects a new one and trains on,
and the killed node comes back. Everything on screen is read from the nodes' own event files
(``join --events``) and from the DHT. The network's web view (``mycelium_p2p.web``, from a DHT
reader in this process) is served at ``web`` and its URL printed (and opened with ``open``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from ..addresses import parse_address
from ..errors import LocalNetError
from ..node.seed import dht_client, query_groups
from ..web import WebView
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
    web: str | None = "127.0.0.1:0"  # where the web view is served (None: not at all)
    open_browser: bool = False  # open the web view in the user's browser


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
    config.out.mkdir(parents=True, exist_ok=True)
    with LocalNet(config.out / "run") as net:
        run = _Run(config, net)
        live = Live(view(run.state, run.phase), console=console, refresh_per_second=4)
        if config.live:
            live.start()
        try:
            async with contextlib.AsyncExitStack() as stack:
                await run.start(lambda: live.update(view(run.state, run.phase)), stop)
                web = await _web_view(config, run, stack)
                while run.going(stop):
                    await run.tick()
                    if config.live:
                        live.update(view(run.state, run.phase))
                    else:
                        _print_new_log(console, run.state)
                    await asyncio.sleep(0.25)
                shown = len((await web.state())["groups"]) if web is not None else None
            run.phase = "stopping: every node leaves its group"
            if config.live:
                live.update(view(run.state, run.phase))
            result = await run.stop()
            result["web"] = run.state.web_url
            result["web_groups"] = shown  # how many groups the web view showed at the end
            if config.live:
                live.update(view(run.state, "stopped"))
        finally:
            if config.live:
                live.stop()
    if not config.live:
        _print_new_log(console, run.state)
    result["plot"] = str(save_plot(run.state, config.out / "demo.png"))
    (config.out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


async def _web_view(
    config: DemoConfig, run: _Run, stack: contextlib.AsyncExitStack
) -> WebView | None:
    """The network's web view, from a DHT reader of our own, until ``stack`` closes; its URL
    goes to the demo's log (and to the browser with ``open_browser``)."""
    if config.web is None:
        return None
    host, port = parse_address(config.web, any_port=True)
    dht = await stack.enter_async_context(dht_client([run.seed]))
    view = WebView(dht)
    try:
        bound = await view.start(host, port)
    except OSError as exc:
        await view.close()
        run.state.note(f"[yellow]no web view on {config.web}: {exc}[/]")
        return None
    stack.push_async_callback(view.close)
    host_text = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"http://{host_text}:{bound[1]}/"
    run.state.web_url = url
    run.state.note(f"web view of the network: {url}")
    if config.open_browser:
        with contextlib.suppress(Exception):  # no browser here: the URL is printed anyway
            await asyncio.to_thread(webbrowser.open, url)
    return view


class _Run:
    """One demo run, step by step: ``start`` the network, ``tick`` until it is time to
    ``stop``. ``phase`` says where it is (the live view shows it)."""

    def __init__(self, config: DemoConfig, net: LocalNet) -> None:
        self.config, self.net = config, net
        self.rng = random.Random(config.seed)
        self.state = DemoState()
        self.domains = min(config.domains, len(GROUP_NAMES), config.nodes)
        self.names = [f"n{i:02d}" for i in range(config.nodes)]
        for i, name in enumerate(self.names):
            self.state.nodes[name] = NodeView(name, i % self.domains)
        self.phase = "starting the bootstrap peer"
        self.seed: tuple[str, int] = ("127.0.0.1", 0)
        # the clock of --duration starts once every node is in a group
        self.t0 = time.monotonic() + STARTUP_TIMEOUT
        self.next_query = 0.0
        self.kill_at = float("inf")
        self.killed: str | None = None
        self.restart_at: float | None = None

    def options(self, i: int) -> list[str]:
        """The ``join`` options of node ``i``: its domain and shard, and the demo's pace."""
        k, c = self.domains, self.config
        per_domain = -(-c.nodes // k)
        return [
            *("--domain", str(i % k), "--data-shard", f"{i // k % per_domain}/{per_domain}"),
            *("--round-pause", str(c.round_pause)),
            *("--evaluation-interval", str(c.evaluation_interval)),
            *("--heartbeat", "0.5", "--threads", "1"),
            "--no-merge",  # the demo starts from mixed groups, to show migration sort them
        ]

    async def start(self, show: Callable[[], None], stop: asyncio.Event) -> None:
        """The bootstrap peer, one founder per domain, then everyone else into mixed groups;
        returns once the founders' groups are listed."""
        net, k, names = self.net, self.domains, self.names
        self.seed = await asyncio.to_thread(net.start_bootstrap, "seed", "127.0.0.1", 0)
        self.state.note(f"bootstrap peer up on udp {self.seed[0]}:{self.seed[1]}")
        self.phase = "founding one group per domain"
        show()
        for i in range(k):  # group i is founded by a node of domain i
            net.start_node(names[i], [self.seed], "--create", GROUP_NAMES[i], *self.options(i))
        # everyone else starts in a group of mixed domains; they start while the founders do
        # (starting a node is mostly importing torch) and find their groups a bit later
        for i in range(k, self.config.nodes):
            target = GROUP_NAMES[(i + i // k) % k]
            net.start_node(names[i], [self.seed], "--group", target, *self.options(i))
        await _wait_listed(net, self.seed, self.state, k, stop)
        self.phase = "nodes joining mixed groups"

    def going(self, stop: asyncio.Event) -> bool:
        return time.monotonic() - self.t0 < self.config.duration and not stop.is_set()

    async def tick(self) -> None:
        """Read the nodes' events and the listing; kill a leader midway, restart it later."""
        for event in self.net.new_events():
            self.state.apply(event)
        self._when_all_grouped()
        if time.monotonic() >= self.next_query:
            self.next_query = time.monotonic() + 3.0
            try:
                adverts = await query_groups([self.seed], timeout=3.0)
                self.state.listed = {a.group_id for a in adverts if a.metrics.members > 0}
            except Exception:
                self.state.listed = set()
        self._harm()
        for peer in self.net.peers.values():
            if peer.returncode not in (None, -signal.SIGKILL) and peer.name != "seed":
                self.state.nodes[peer.name].role = f"exited {peer.returncode}"

    def _when_all_grouped(self) -> None:
        if self.phase == "training and migrating":
            return
        if all(n.group_id for n in self.state.nodes.values()):
            self.phase = "training and migrating"
            self.t0 = time.monotonic()
            self.kill_at = self.t0 + self.config.duration * 0.5
            self.state.note(f"all {self.config.nodes} nodes are in groups")

    def _harm(self) -> None:
        """Midway, SIGKILL a leader; 10 s later, start it again (same identity and data)."""
        now = time.monotonic()
        if self.config.kill_leader and self.killed is None and now >= self.kill_at:
            late = now >= self.t0 + self.config.duration * 0.75
            self.killed = _kill_a_leader(self.net, self.state, self.rng, any_group=late)
            self.restart_at = now + 10.0
        if self.killed and self.restart_at and now >= self.restart_at:
            self.restart_at = None
            # it finds a group like any newcomer
            options = self.options(self.names.index(self.killed))
            self.net.start_node(self.killed, [self.seed], *options)
            self.state.nodes[self.killed].role = "starting"
            self.state.note(f"{self.killed} restarted (same identity and data)")

    async def stop(self) -> dict[str, Any]:
        """The summary of the network as it trained, then every node stopped (and left)."""
        result = summary(self.state)
        exit_codes = await asyncio.to_thread(self.net.stop_all)
        result["pids"] = list(self.net.started_pids)
        for event in self.net.new_events():
            self.state.apply(event)
        result["processes"] = len(exit_codes)
        result["exit_codes"] = exit_codes
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
