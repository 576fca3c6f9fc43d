"""Chaos runs: real node processes, real SIGKILL and SIGSTOP, cut links, a partitioned LAN.

A run starts two bootstrap peers, ``nodes`` full nodes and two observers (``mycelium-p2p groups
--watch --json``), each on its own network-namespace host where namespaces are available
(``netns``), else all on loopback. Then, for ``duration`` seconds, it does
something bad every few seconds, chosen by ``seed``:

  kill-leader     SIGKILL a group's leader, restart it a few seconds later
  kill-member     SIGKILL a member, restart it
  kill-bootstrap  SIGKILL a bootstrap peer, restart it on the same address
  stop-leader     SIGSTOP a leader (alive but silent) for a few seconds, then SIGCONT
  cut-transfer    cut a member off right when its group's next round sends it the model
                  (its link down; on loopback: SIGSTOP) and reconnect it
  partition       split the LAN in two halves (8 s; partition_seconds) and heal it

and checks, continuously, from the nodes' event files (``join --events``) and the observers'
listings: every live group already listed is listed again within 5 s of a kill, and a new
group within 30 s of its first round; no group's round counter goes back
or repeats with another model (a fork: a lost round; a leader woken from SIGSTOP may report a
round late that it had committed before, and the same digest tells it apart); no two nodes
lead, or complete rounds in, the same term of a group; no process we did not kill exits;
after a partition heals, both halves list every live group and every group has at most one
leader within 10 s, and groups founded while cut off have merged back within 30 s (no more
groups than before the cut).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import events as ev
from ..cli.localnet import CLI, LocalNet, Peer
from . import netns

SEED_PORT = 8468
NODE_PORT = 8470
WEIGHTS = {  # how often each harm is picked once each has been done once
    "kill-leader": 3,
    "kill-member": 3,
    "kill-bootstrap": 1,
    "stop-leader": 2,
    "cut-transfer": 2,
    "partition": 1,
}
ACTIONS = tuple(WEIGHTS)
FOUNDING_WINDOW = 12.0  # s after a heal in which a node cut off may still found a group
FAILOVER_WINDOW = 30.0  # s: a killed leader's group trains again within this, or it regrouped


@dataclass
class ChaosConfig:
    """One chaos run. The defaults are the CI run (about 7 minutes on two cores)."""

    workdir: Path
    nodes: int = 20
    duration: float = 240.0  # seconds of chaos once every node is in a group
    seed: int = 0
    action_every: float = 7.0
    use_netns: bool | None = None  # None: namespaces where available, else loopback
    heartbeat: float = 0.5
    round_pause: float = 1.0
    reply_timeout: float = 10.0
    capacity: int = 6
    domains: int = 4
    discovery_deadline: float = 5.0  # a listed group listed again after a kill
    new_group_deadline: float = 30.0  # a new group listed after its first round
    heal_deadline: float = 10.0
    consolidate_deadline: float = 30.0  # groups founded while cut off merged after a heal
    # (what must always hold; scripts/bench_formation.py --partition measures the 10 s goal)
    merge: bool = True  # False: nodes run with --no-merge (groups never consolidate)
    partition_seconds: float = 8.0
    # a heal not followed by consolidation is a violation (the CI run sets it); unset, a miss
    # is only counted (goals_missed)
    expect_consolidation: bool = False
    startup_timeout: float = 240.0
    harm: bool = True  # False: only watch (the scale run)


@dataclass
class Summary:
    mode: str = "loopback"
    nodes: int = 0
    seconds: float = 0.0
    actions: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    restarts: int = 0
    failovers: int = 0
    regrouped: int = 0  # killed or frozen leaders whose members went to other groups instead
    partitions: int = 0
    worst_discovery_gap: float = 0.0
    worst_failover: float = 0.0
    failover_times: list[float] = field(default_factory=list)
    worst_heal: float = 0.0
    founded_while_cut: int = 0  # groups founded during partitions
    worst_consolidation: float = 0.0  # heal to as few groups per domain as capacity allows
    goals_missed: list[str] = field(default_factory=list)  # soft checks (not violations)
    rounds_completed: int = 0
    rounds_lost: int = 0
    violations: list[str] = field(default_factory=list)
    errors_logged: int = 0
    time_to_all_in_groups: float = 0.0
    rss_mb_per_node: float = 0.0
    startup_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["invariant_violations"] = len(self.violations)
        return out


class Invariants:
    """Fed with node events (in time order); records violations as they happen."""

    def __init__(self, summary: Summary) -> None:
        self.summary = summary
        self.top_round: dict[str, int] = {}  # group -> highest completed round
        self.models: dict[tuple[str, int], str] = {}  # (group, round) -> model digest
        self.term_rounds: dict[tuple[str, int], str] = {}  # (group, term) -> who completed rounds
        self.term_leader: dict[tuple[str, int], str] = {}  # (group, term) -> who was elected
        self.role: dict[str, tuple[str | None, str]] = {}  # peer -> (group, role)
        self.last_round: dict[str, tuple[float, str]] = {}  # group -> (time, leader peer)
        self.first_round: dict[str, float] = {}  # group -> when its first round was reported
        self.ended: dict[str, float] = {}  # group -> when its leader left it (moved, regrouped)

    def violation(self, text: str) -> None:
        self.summary.violations.append(f"{time.strftime('%H:%M:%S')} {text}")

    def on_event(self, e: dict[str, Any]) -> None:
        peer, kind, gid = e["peer"], e.get("kind"), e.get("group_id")
        was = self.role.get(peer, (None, "none"))
        if kind in (ev.MOVING, ev.REGROUP, ev.MERGE, ev.STOPPED) and was[1] == "leader" and was[0]:
            self.ended[was[0]] = float(e["t"])
        if kind in (ev.FOUNDED, ev.LEADER) and gid:
            self.role[peer] = (gid, "leader")
        elif kind in (ev.JOINED, ev.FOLLOWER) and gid:
            self.role[peer] = (gid, "member")
        elif kind in (ev.MOVING, ev.STOPPED, ev.UP, ev.REGROUP):
            self.role[peer] = (None, "none")
        if kind == ev.LEADER and gid:
            if e.get("digest") and e.get("round"):  # the model it leads from is that round's
                self.models.setdefault((gid, int(e["round"])), str(e["digest"]))
            key = (gid, int(e.get("term", 0)))
            first = self.term_leader.setdefault(key, peer)
            if first != peer:
                self.violation(f"two leaders elected in term {key[1]} of {gid}: {first}, {peer}")
        if kind == ev.ROUND and gid:
            digest = str(e.get("digest", ""))
            self._on_round(peer, gid, int(e["round"]), int(e["term"]), float(e["t"]), digest)

    def _on_round(self, peer: str, gid: str, rnd: int, term: int, at: float, digest: str) -> None:
        self.summary.rounds_completed += 1
        first = self.term_rounds.setdefault((gid, term), peer)
        if first != peer:
            self.violation(f"{first} and {peer} both completed rounds in term {term} of {gid}")
        known = self.models.get((gid, rnd))
        if known is None:
            self.models[(gid, rnd)] = digest
        elif digest and known == digest:
            return  # reported late (its leader was frozen), the very model the group went on from
        top = self.top_round.get(gid, 0)
        if known is not None and digest and known != digest:
            self.summary.rounds_lost += 1
            self.violation(f"{gid} round {rnd} has two models (under {peer}, term {term})")
        elif rnd <= top:
            self.summary.rounds_lost += 1
            what = "repeated" if rnd == top else "went back to"
            self.violation(f"{gid} {what} round {rnd} (had {top}) under {peer}, term {term}")
        self.top_round[gid] = max(top, rnd)
        self.last_round[gid] = (at, peer)
        self.first_round.setdefault(gid, at)

    def leaders(self, alive: Callable[[str], bool]) -> dict[str, set[str]]:
        """Group -> the live peers whose last word was that they lead it."""
        out: dict[str, set[str]] = {}
        for peer, (gid, role) in self.role.items():
            if gid and role == "leader" and alive(peer):
                out.setdefault(gid, set()).add(peer)
        return out


@dataclass
class _Check:
    """Something that must become true before ``deadline``."""

    what: str
    started: float
    deadline: float
    test: Callable[[], bool]
    on_pass: Callable[[float], None]
    explain: Callable[[], str] = lambda: ""
    soft: bool = False  # a goal not met yet: missing it is counted, not a violation


class ChaosRun:
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
        self.checks: list[_Check] = []
        self.listings: dict[str, tuple[float, set[str]]] = {}  # observer -> (time, group ids)
        self.dissolving: dict[str, set[str]] = {}  # observer -> groups listed with 0 members
        self.ever_listed: set[str] = set()  # groups some observer has listed
        self.late_groups: set[str] = set()  # new groups already reported as listed too late
        self._obs_offset: dict[str, int] = {}
        self.partitioned = False
        self.founded: list[tuple[float, str, str]] = []  # (time, peer, group) of "founded" events
        self.regrouped: list[tuple[float, str]] = []  # (time, peer) of "regroup" events
        self.pending_failover: dict[str, tuple[float, str]] = {}  # group -> (time, old leader)
        self._held: list[dict[str, Any]] = []

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
            self._read_observer(f"obs-{name}")
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

    def _read_observer(self, name: str) -> None:
        peer = self.net.peers.get(name)
        if peer is None:
            return
        try:
            with open(peer.log_path, "rb") as fh:
                fh.seek(self._obs_offset.get(name, 0))
                chunk = fh.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._obs_offset[name] = self._obs_offset.get(name, 0) + len(complete)
        for line in complete.splitlines():
            if line.startswith(b"["):
                try:
                    adverts = json.loads(line)
                    listed = {a["group_id"] for a in adverts if a["members"] > 0}
                    ending = {a["group_id"] for a in adverts if a["members"] == 0}
                except (ValueError, KeyError, TypeError):
                    continue
                self.listings[name] = (time.monotonic(), listed)
                self.dissolving[name] = ending  # its leader left alone: it announced its end
                self.ever_listed |= listed

    def _check_new_groups(self) -> None:
        """A group with rounds must be listed within ``new_group_deadline`` of its first round."""
        now = time.time()
        for gid in self._live_groups() - self.ever_listed - self.late_groups:
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
        if self.partitioned:
            return
        started = time.monotonic()
        # groups already listed: a kill must not make them vanish (new ones: _check_new_groups)
        wanted = self._live_groups() & self.ever_listed

        def listed_since() -> set[str]:
            out: set[str] = set()
            for at, groups in self.listings.values():
                if at > started:
                    out |= groups
            return out

        def passed(took: float) -> None:
            self.summary.worst_discovery_gap = max(self.summary.worst_discovery_gap, took)

        self.checks.append(
            _Check(
                f"groups {sorted(wanted)} listed after {what}",
                started,
                started + self.config.discovery_deadline,
                lambda: wanted & self._live_groups() <= listed_since(),
                passed,
                lambda: f"missing: {sorted(wanted & self._live_groups() - listed_since())}",
            )
        )

    # -- doing harm --------------------------------------------------------------------------------

    def _later(self, delay: float, what: str, do: Callable[[], None]) -> None:
        self.pending.append((time.monotonic() + delay, what, do))

    def _kill(self, name: str, restart_after: float) -> None:
        peer = self.net.peers[name]
        self.expected_down.add(name)
        self.invariants.role[name] = (None, "none")  # a restarted node starts from nothing
        peer.signal(signal.SIGKILL)
        self.summary.kills += 1
        self._later(restart_after, f"restart {name}", lambda: self._restart(name))

    def _restart(self, name: str) -> None:
        self.stopped.discard(name)
        peer = self.net.peers[name]
        if peer.popen is not None:  # SIGKILLed, but on a loaded host it may not be gone yet
            with contextlib.suppress(subprocess.TimeoutExpired):
                peer.popen.wait(10)
        if name in self.nodes:  # same identity and data; a founder now joins like anyone
            self._start_node(name, self.nodes.index(name), found=False)
        else:
            self.net.restart(name)
        self.expected_down.discard(name)
        self.summary.restarts += 1

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

    def act(self, action: str) -> str | None:
        """Do ``action``; returns what was done (None when nothing fitted right now)."""
        rng = self.rng
        if action == "kill-leader":
            leaders = self._leaders()
            if not leaders:
                return None
            gid, peer = rng.choice(leaders)
            self.pending_failover[gid] = (time.time(), peer)
            self._kill(peer, rng.uniform(3, 8))
            self._expect_listed(f"killing leader {peer}")
            return f"SIGKILL leader {peer} of {gid}"
        if action == "kill-member":
            members = self._members()
            if not members:
                return None
            peer = rng.choice(members)
            self._kill(peer, rng.uniform(3, 8))
            self._expect_listed(f"killing member {peer}")
            return f"SIGKILL member {peer}"
        if action == "kill-bootstrap":
            seed = rng.choice([s for s in self.seeds if self._alive(s)] or [None])
            if seed is None:
                return None
            self._kill(seed, 3.0)
            self._expect_listed(f"killing bootstrap peer {seed}")
            return f"SIGKILL bootstrap {seed}"
        if action == "stop-leader":
            leaders = self._leaders()
            if not leaders:
                return None
            gid, peer = rng.choice(leaders)
            self.pending_failover[gid] = (time.time(), peer)
            self._pause(peer, 4.0)
            return f"SIGSTOP leader {peer} of {gid} for 4 s"
        if action == "cut-transfer":
            members = self._members()
            if not members:
                return None
            peer = rng.choice(members)
            cut_gid = self.invariants.role[peer][0]
            assert cut_gid is not None
            # the next round starts round_pause after the last one: cut just after it starts
            at, _ = self.invariants.last_round.get(cut_gid, (time.time(), ""))
            wait = min(3.0, max(0.0, at + self.config.round_pause + 0.1 - time.time()))
            self._later(wait, f"cut {peer} off mid-round", lambda: self._cut(peer, 3.0))
            return f"cut member {peer} of {cut_gid} off in {wait:.1f} s, for 3 s"
        if action == "partition":
            if not self.lan or self.partitioned:
                return None
            return self._partition(self.config.partition_seconds)
        raise ValueError(action)

    def _cut(self, name: str, seconds: float) -> None:
        """Its link down (on loopback: SIGSTOP, the closest thing), then back."""
        lan = self.lan
        if lan is None:
            self._pause(name, seconds)
            return
        lan.link_down(self.host_of[name])
        self._later(seconds, f"reconnect {name}", lambda: lan.link_up(self.host_of[name]))

    def _pause(self, name: str, seconds: float) -> None:
        peer = self.net.peers[name]
        self.stopped.add(name)
        peer.signal(signal.SIGSTOP)

        def resume() -> None:
            self.stopped.discard(name)
            peer.signal(signal.SIGCONT)

        self._later(seconds, f"SIGCONT {name}", resume)

    def _partition(self, seconds: float) -> str:
        assert self.lan is not None
        lan = self.lan
        names = self.seeds + self.nodes
        # seed1 and half the nodes, drawn anew each time. (Every other node, as this was,
        # put whole data domains on each side: node i is in domain i % 4, so no group was
        # ever split and nothing was founded while cut off.)
        cut = self.rng.sample(self.nodes, len(self.nodes) // 2)
        side_b = [self.host_of[n] for n in [*self.seeds[1:2], *cut]]
        before = self.group_count()
        lan.partition(side_b)
        self.partitioned = True
        self.summary.partitions += 1
        cut_at = time.time()

        def heal() -> None:
            lan.heal()
            self.partitioned = False
            self._expect_healed()
            self._expect_consolidated(cut_at, time.time(), before)

        self._later(seconds, "heal the partition", heal)
        return (
            f"partition: {len(side_b)} hosts cut from {len(names) - len(side_b)} for {seconds:g} s"
        )

    def _expect_healed(self) -> None:
        started = time.monotonic()
        existing = set(self.invariants.last_round)  # groups born after the heal may lag

        def views() -> list[set[str]]:
            return [g for at, g in self.listings.values() if at > started]

        def split_leaders() -> dict[str, set[str]]:
            leaders = self.invariants.leaders(lambda p: self._alive(p) and p not in self.stopped)
            return {g: peers for g, peers in leaders.items() if len(peers) > 1}

        def one_network() -> bool:
            """Both halves list every live group, and no group has two leaders."""
            fresh = views()
            if len(fresh) < len(self.listings) or not fresh:
                return False
            live = self._live_groups() & existing
            return all(live <= g for g in fresh) and not split_leaders()

        def explain() -> str:
            live = self._live_groups() & existing
            missing = " / ".join(str(sorted(live - g)) for g in views()) or "no fresh listing"
            return f"live groups missing per observer: {missing}; split: {split_leaders()}"

        def passed(took: float) -> None:
            self.summary.worst_heal = max(self.summary.worst_heal, took)

        self.checks.append(
            _Check(
                "one network and one leader per group after healing",
                started,
                started + self.config.heal_deadline,
                one_network,
                passed,
                explain,
            )
        )

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
        """Groups founded while the LAN was cut merge back: within ``consolidate_deadline`` of
        the heal the network has no more groups than the ``before`` it had when cut, and keeps
        so past ``FOUNDING_WINDOW`` after the heal (a join tried while cut off has to time out
        before its node founds a group). Counted over groups, not domains: a node that
        regrouped may sit in another domain's group until migration moves it home."""
        if not self.config.merge:
            return
        window_end = healed_at + FOUNDING_WINDOW
        ok_since: list[float] = []  # when the network last had few enough groups
        counted: list[bool] = []

        def count_founded() -> None:
            if not counted:
                counted.append(True)
                founded = {g for at, _, g in self.founded if cut_at <= at <= window_end}
                self.summary.founded_while_cut += len(founded)

        def settled() -> bool:
            now = time.time()
            if self.group_count() > before:
                ok_since.clear()
                return False
            if not ok_since:
                ok_since.append(now)
            return now >= window_end

        def passed(_: float) -> None:
            count_founded()
            took = max(0.0, ok_since[0] - healed_at)
            self.summary.worst_consolidation = max(self.summary.worst_consolidation, took)

        def explain() -> str:
            count_founded()
            groups = {d: sorted(g) for d, g in self.domain_groups().items()}
            return f"{self.group_count()} groups, {before} before the cut: {groups}"

        started = time.monotonic() - (time.time() - healed_at)
        self.checks.append(
            _Check(
                "groups founded while cut off merged back after the heal",
                started,
                started + self.config.consolidate_deadline,
                settled,
                passed,
                explain,
                soft=not self.config.expect_consolidation,
            )
        )

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
                    done = self.act(action)
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
        """The formation benchmark's partition arm, on one network (no other harm): ``trials``
        times, cut ``cut[0]``..``cut[1]`` random nodes off for ``seconds``, heal, and time how
        long until every live node is in a group and each domain is in as few groups as its
        nodes fit in (at most ``settle`` s). Needs namespaces."""
        results: list[dict[str, Any]] = []
        try:
            self.start()
            if self.lan is None:
                raise netns.NetnsUnavailable("partitions need network namespaces")
            lan = self.lan
            log(
                f"{self.config.nodes} nodes in groups after "
                f"{self.summary.time_to_all_in_groups:.1f} s"
            )

            def consolidated() -> bool:
                return not self.surplus_groups(ungrouped=True)

            for trial in range(trials):
                settled = self._pump(self.config.startup_timeout, consolidated)
                before = {d: sorted(g) for d, g in self.domain_groups().items()}
                lost = self.summary.rounds_lost
                count = self.group_count()
                side = sorted(self.rng.sample(self.nodes, self.rng.randint(*cut)))
                cut_at = time.time()
                lan.partition([self.host_of[n] for n in side])
                self.partitioned = True
                self._pump(seconds)
                lan.heal()
                healed_at = time.time()
                self.partitioned = False
                self._expect_healed()
                self._expect_consolidated(cut_at, healed_at, count)
                at_heal = sum(len(g) for g in self.domain_groups().values())
                took = self._pump(settle, consolidated)
                window = healed_at + FOUNDING_WINDOW
                founded = {g for at, _, g in self.founded if cut_at <= at <= window}
                result = {
                    "trial": trial + 1,
                    "cut": side,
                    "settled_before": settled is not None,
                    "groups_before": sum(len(g) for g in before.values()),
                    "founded_while_cut": len(founded),
                    "groups_at_heal": at_heal,
                    "groups_end": sum(len(g) for g in self.domain_groups().values()),
                    "ideal": sum(self._fewest(d) for d in range(self.config.domains)),
                    "consolidated_s": None if took is None else round(took, 2),
                    "rounds_lost": self.summary.rounds_lost - lost,
                }
                results.append(result)
                log(f"trial {trial + 1}: {result}")
        finally:
            self.net.stop_all()
            self.summary.errors_logged = self._errors_logged()
            if self.lan is not None:
                self.lan.teardown()
        return results

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
        return sum(peer.output().count("Traceback") for peer in self.net.peers.values())
