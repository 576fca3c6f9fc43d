"""``ChaosRun``: starts the processes, follows their events and the observers' listings,
does harm at random and runs the checks (see the package's docstring)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import events as ev
from ...cli.localnet import CLI, LocalNet, Peer
from .. import netns
from ..lan_nodes import NODE_PORT, SEED_PORT
from .config import ACTIONS, FAILOVER_WINDOW, WEIGHTS, ChaosConfig, Summary, errors_in
from .expectations import consolidated_check, healed_check, listed_check
from .harm import Harm
from .invariants import Check, Invariants
from .observers import Listings
from .trials import partition_trials


class ChaosRun:
    """A chaos run on ``config``: ``run`` it (or ``partition_trials``) for its summary."""

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.summary = Summary(nodes=config.nodes)
        self.invariants = Invariants(self.summary)
        self.lan: netns.Lan | None = None
        self.net = LocalNet(config.workdir)
        self.host_of: dict[str, int] = {}
        self.seeds: list[str] = []
        self.nodes: list[str] = []
        self.expected_down: set[str] = set()  # killed or stopped by us, until restarted
        self.stopped: set[str] = set()  # SIGSTOPped right now
        self.pending: list[tuple[float, str, Callable[[], None]]] = []  # (when, what, do)
        self.checks: list[Check] = []
        self.observed = Listings()
        self.late_groups: set[str] = set()  # new groups already reported as listed too late
        self.partitioned = False
        self.founded: list[tuple[float, str, str]] = []  # (time, peer, group) of "founded" events
        self.regrouped: list[tuple[float, str]] = []  # (time, peer) of "regroup" events
        self.pending_failover: dict[str, tuple[float, str]] = {}  # group -> (time, old leader)
        self._held: list[dict[str, Any]] = []
        self.harm = Harm(self)

    # -- addresses -------------------------------------------------------------------------------

    def _addr(self, name: str) -> str:
        return self.lan.addr(self.host_of[name]) if self.lan else "127.0.0.1"

    def _prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.lan.ns(self.host_of[name])] if self.lan else []

    def _bootstrap(self) -> list[tuple[str, int]]:
        return [(self._addr(s), self.seed_ports[s]) for s in self.seeds]

    # -- starting ----------------------------------------------------------------------------------

    def start(self) -> None:
        c = self.config
        use = c.use_netns
        reason = netns.netns_unavailable() if use is not False else "not asked for"
        if use and reason:
            raise netns.NetnsUnavailable(reason)
        hosts = 2 + c.nodes
        if not reason:
            self.lan = netns.Lan(hosts).up()
            self.summary.mode = f"netns ({hosts} hosts on a bridge, 198.18.0.0/24)"
        started = time.monotonic()
        self.seeds = ["seed0", "seed1"]
        self.nodes = [f"n{i:02d}" for i in range(c.nodes)]
        for i, name in enumerate(self.seeds + self.nodes):
            self.host_of[name] = i
        self.seed_ports: dict[str, int] = {}
        for name in self.seeds:
            port = SEED_PORT if self.lan else 0
            _, self.seed_ports[name] = self.net.start_bootstrap(
                name, self._addr(name), port, prefix=self._prefix(name)
            )
            if not self.lan:  # a restart must come back on the same port
                peer = self.net.peers[name]
                peer.args[peer.args.index("--port") + 1] = str(self.seed_ports[name])
        for i, name in enumerate(self.nodes):
            self._start_node(name, i)
            if i < c.domains:  # founders first, so the others find groups with room
                self.net.wait_for_output(self.net.peers[name], "founded group", c.startup_timeout)
        for name in self.seeds:
            self.net.start(
                f"obs-{name}",
                [
                    *CLI,
                    "groups",
                    "--watch",
                    "--json",
                    "--interval",
                    "1",
                    "--timeout",
                    "4",
                    *(f"--bootstrap={self._addr(s)}:{self.seed_ports[s]}" for s in self.seeds),
                ],
                prefix=self._prefix(name),
            )
            self.host_of[f"obs-{name}"] = self.host_of[name]
        deadline = time.monotonic() + c.startup_timeout
        while time.monotonic() < deadline:
            self._follow()
            grouped = {p for p, (g, _) in self.invariants.role.items() if g}
            if grouped >= set(self.nodes):
                break
            time.sleep(0.5)
        else:
            missing = sorted(set(self.nodes) - set(self.invariants.role))
            raise TimeoutError(f"nodes not in a group after {c.startup_timeout:g} s: {missing}")
        self.summary.time_to_all_in_groups = time.monotonic() - started

    def _start_node(self, name: str, i: int, found: bool = True) -> Peer:
        c = self.config
        per_domain = -(-c.nodes // c.domains)
        options = [
            *("--domain", str(i % c.domains), "--data-shard", f"{i // c.domains}/{per_domain}"),
            *("--heartbeat", str(c.heartbeat), "--round-pause", str(c.round_pause)),
            *("--reply-timeout", str(c.reply_timeout), "--threads", "1"),
            *("--evaluation-interval", "10", "--capacity", str(c.capacity)),
        ]
        if not c.merge:
            options.append("--no-merge")
        if self.lan:
            options += ["--port", str(NODE_PORT)]
        if found and i < c.domains:  # one group per domain (domains' models never merge)
            options += ["--create", f"g{i}"]
        return self.net.start_node(
            name, self._bootstrap(), *options, host=self._addr(name), prefix=self._prefix(name)
        )

    # -- following ---------------------------------------------------------------------------------

    def _alive(self, name: str) -> bool:
        peer = self.net.peers.get(name)
        return peer is not None and peer.alive and name not in self.expected_down

    def _follow(self) -> None:
        now = time.time()
        self._held += self.net.new_events()
        self._held.sort(key=lambda e: e.get("t", 0.0))
        ready = [e for e in self._held if e.get("t", 0.0) < now - 0.5]  # late writers catch up
        self._held = self._held[len(ready) :]
        for event in ready:
            self.invariants.on_event(event)
            self._on_event(event)
        for name in self.seeds:
            observer = self.net.peers.get(f"obs-{name}")
            if observer is not None:
                self.observed.read(f"obs-{name}", observer.log_path)
        for name, peer in self.net.peers.items():
            code = peer.returncode
            if code is not None and name not in self.expected_down:
                self.invariants.violation(f"{name} exited by itself with code {code}")
                self.expected_down.add(name)  # report once

    def _on_event(self, e: dict[str, Any]) -> None:
        gid = e.get("group_id")
        if e.get("kind") == ev.FOUNDED and gid:
            self.founded.append((float(e["t"]), str(e["peer"]), str(gid)))
        if e.get("kind") == ev.REGROUP:
            self.regrouped.append((float(e["t"]), str(e["peer"])))
        if e.get("kind") == ev.ROUND and gid in self.pending_failover:
            at, old = self.pending_failover[gid]
            if e["t"] - at > FAILOVER_WINDOW:  # the group dissolved; a later round is a revival
                del self.pending_failover[gid]
                self.summary.regrouped += 1
            elif e["peer"] != old and e["t"] > at:
                del self.pending_failover[gid]
                took = e["t"] - at
                self.summary.failovers += 1
                self.summary.failover_times.append(round(took, 2))
                self.summary.worst_failover = max(self.summary.worst_failover, took)

    def _check_new_groups(self) -> None:
        """A group with rounds must be listed within ``new_group_deadline`` of its first round."""
        now = time.time()
        for gid in self._live_groups() - self.observed.ever_listed - self.late_groups:
            first = self.invariants.first_round.get(gid, now)
            if now - first > self.config.new_group_deadline:
                self.late_groups.add(gid)
                self.invariants.violation(
                    f"new group {gid} not listed {self.config.new_group_deadline:g} s after "
                    "its first round"
                )

    def _run_checks(self) -> None:
        self._check_new_groups()
        now = time.monotonic()
        for check in list(self.checks):
            if check.test():
                check.on_pass(now - check.started)
                self.checks.remove(check)
            elif now > check.deadline:
                why = check.explain()
                limit = check.deadline - check.started
                text = f"{check.what}: not within {limit:g} s" + (f" ({why})" if why else "")
                if check.soft:
                    self.summary.goals_missed.append(f"{time.strftime('%H:%M:%S')} {text}")
                else:
                    self.invariants.violation(text)
                self.checks.remove(check)

    def _live_groups(self) -> set[str]:
        """Groups whose leader is alive and has completed a round in the last 10 s."""
        now = time.time()
        ended = self.invariants.ended
        return {
            gid
            for gid, (at, peer) in self.invariants.last_round.items()
            if now - at < 10
            and self._alive(peer)
            and peer not in self.stopped
            and ended.get(gid, 0.0) < at
        }

    def _expect_listed(self, what: str) -> None:
        """Every live group must be listed by an observer within the discovery deadline."""
        if not self.partitioned:
            self.checks.append(listed_check(self, what))

    # -- doing harm --------------------------------------------------------------------------------

    def later(self, delay: float, what: str, do: Callable[[], None]) -> None:
        """Do ``do`` (described as ``what``) ``delay`` s from now, in the run's loop."""
        self.pending.append((time.monotonic() + delay, what, do))

    def _leaders(self, min_members: int = 3) -> list[tuple[str, str]]:
        """(group, leader) of groups with a live leader and at least ``min_members`` live."""
        members: dict[str, int] = {}
        for peer, (gid, _) in self.invariants.role.items():
            if gid and self._alive(peer):
                members[gid] = members.get(gid, 0) + 1
        return sorted(
            (gid, peer)
            for gid, peers in self.invariants.leaders(self._alive).items()
            for peer in peers
            if members.get(gid, 0) >= min_members and peer not in self.stopped
        )

    def _members(self) -> list[str]:
        return sorted(
            p
            for p, (gid, role) in self.invariants.role.items()
            if gid and role == "member" and self._alive(p) and p not in self.stopped
        )

    def _expect_healed(self) -> None:
        self.checks.append(healed_check(self))

    def domain_groups(self) -> dict[int, set[str]]:
        """Domain -> the groups that a live node of that domain is in."""
        out: dict[int, set[str]] = {d: set() for d in range(self.config.domains)}
        for peer, (gid, _) in self.invariants.role.items():
            if gid and peer in self.nodes and self._alive(peer):
                out[self.nodes.index(peer) % self.config.domains].add(gid)
        return out

    def _domain_nodes(self, domain: int) -> list[str]:
        """The live nodes of ``domain``."""
        c = self.config
        return [p for i, p in enumerate(self.nodes) if i % c.domains == domain and self._alive(p)]

    def _fewest(self, domain: int) -> int:
        """The fewest groups the live nodes of ``domain`` fit in."""
        return -(-len(self._domain_nodes(domain)) // self.config.capacity)

    def surplus_groups(
        self, domains: set[int] | None = None, *, ungrouped: bool = False
    ) -> dict[int, int]:
        """Domain -> groups beyond the fewest its live nodes fit in (ceil(n / capacity)), plus
        (``ungrouped``) its live nodes in no group; only domains with a surplus."""
        out: dict[int, int] = {}
        for d, groups in self.domain_groups().items():
            if domains is not None and d not in domains:
                continue
            extra = len(groups) - self._fewest(d)
            if ungrouped:
                extra += sum(
                    1
                    for p in self._domain_nodes(d)
                    if not self.invariants.role.get(p, (None, ""))[0]
                )
            if extra > 0:
                out[d] = extra
        return out

    def group_count(self) -> int:
        """How many groups have a live node in them."""
        return len(set().union(*self.domain_groups().values()))

    def _expect_consolidated(self, cut_at: float, healed_at: float, before: int) -> None:
        """Groups founded while the LAN was cut must merge back (see ``consolidated_check``)."""
        if (check := consolidated_check(self, cut_at, healed_at, before)) is not None:
            self.checks.append(check)

    # -- the run -----------------------------------------------------------------------------------

    def run(self, log: Callable[[str], None] = print) -> Summary:
        c = self.config
        t_start = time.monotonic()
        try:
            self.start()
            self.summary.startup_seconds = time.monotonic() - t_start
            self.summary.rss_mb_per_node = self._rss_mb()
            log(
                f"{c.nodes} nodes in groups after {self.summary.time_to_all_in_groups:.1f} s "
                f"({self.summary.mode}); {self.summary.rss_mb_per_node:.0f} MB RSS per node"
            )
            order = [a for a in ACTIONS if self.lan or a != "partition"]
            self.rng.shuffle(order)  # every kind of harm early, then at random
            chaos_end = time.monotonic() + c.duration
            next_action = time.monotonic() + 2.0
            while time.monotonic() < chaos_end or self.pending or self.checks:
                now = time.monotonic()
                if now > chaos_end + 60:
                    self.invariants.violation("the run did not settle within 60 s")
                    break
                self._follow()
                for item in [p for p in self.pending if p[0] <= now]:
                    self.pending.remove(item)
                    item[2]()
                    log(f"{now - t_start:7.1f}s  {item[1]}")
                self._run_checks()
                if c.harm and now >= next_action and now < chaos_end:
                    kinds = [a for a in ACTIONS if self.lan or a != "partition"]
                    action = (
                        order.pop(0)
                        if order
                        else self.rng.choices(kinds, [WEIGHTS[a] for a in kinds])[0]
                    )
                    done = self.harm.act(action)
                    if done:
                        self.summary.actions[action] = self.summary.actions.get(action, 0) + 1
                        log(f"{now - t_start:7.1f}s  {done}")
                    next_action = now + c.action_every * self.rng.uniform(0.6, 1.4)
                time.sleep(0.2)
            time.sleep(1.0)
            self._follow()
            self.summary.regrouped += len(self.pending_failover)
        finally:
            self.summary.seconds = time.monotonic() - t_start
            self.net.stop_all()
            self.summary.errors_logged = self._errors_logged()
            if self.lan is not None:
                self.lan.teardown()
        return self.summary

    def _pump(self, seconds: float, until: Callable[[], bool] | None = None) -> float | None:
        """Follow events and run checks for up to ``seconds``; with ``until``: the seconds it
        took to become true (and stay so for 1 s), or None if it did not."""
        start = time.monotonic()
        since: float | None = None
        while time.monotonic() - start < seconds:
            self._follow()
            self._run_checks()
            if until is not None:
                if not until():
                    since = None
                elif since is None:
                    since = time.monotonic()
                elif time.monotonic() - since >= 1.0:
                    return since - start
            time.sleep(0.2)
        return None

    def partition_trials(
        self,
        trials: int,
        *,
        cut: tuple[int, int] = (2, 5),
        seconds: float = 20.0,
        settle: float = 60.0,
        log: Callable[[str], None] = print,
    ) -> list[dict[str, Any]]:
        """The formation benchmark's partition arm (see ``trials.partition_trials``)."""
        return partition_trials(self, trials, cut=cut, seconds=seconds, settle=settle, log=log)

    def _rss_mb(self) -> float:
        sizes = []
        for name in self.nodes:
            try:
                status = Path(f"/proc/{self.net.peers[name].pid}/status").read_text()
            except FileNotFoundError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
        return sum(sizes) / len(sizes) if sizes else 0.0

    def _errors_logged(self) -> int:
        return sum(errors_in(peer.output()) for peer in self.net.peers.values())
