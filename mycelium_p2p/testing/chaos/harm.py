"""``Harm``: the bad things a chaos run does, each undone later on the run's schedule (killed
processes restarted, stopped ones resumed, cut links plugged back, the partition healed)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import ChaosRun


class Harm:
    """Does harm to ``run``'s processes and LAN; what it does is counted in its summary."""

    def __init__(self, run: ChaosRun) -> None:
        self.run = run

    def act(self, action: str) -> str | None:
        """Do ``action``; returns what was done (None when nothing fitted right now)."""
        run = self.run
        rng = run.rng
        if action == "kill-leader":
            leaders = run._leaders()
            if not leaders:
                return None
            gid, peer = rng.choice(leaders)
            run.pending_failover[gid] = (time.time(), peer)
            self.kill(peer, rng.uniform(3, 8))
            run._expect_listed(f"killing leader {peer}")
            return f"SIGKILL leader {peer} of {gid}"
        if action == "kill-member":
            members = run._members()
            if not members:
                return None
            peer = rng.choice(members)
            self.kill(peer, rng.uniform(3, 8))
            run._expect_listed(f"killing member {peer}")
            return f"SIGKILL member {peer}"
        if action == "kill-bootstrap":
            seed = rng.choice([s for s in run.seeds if run._alive(s)] or [None])
            if seed is None:
                return None
            self.kill(seed, 3.0)
            run._expect_listed(f"killing bootstrap peer {seed}")
            return f"SIGKILL bootstrap {seed}"
        if action == "stop-leader":
            leaders = run._leaders()
            if not leaders:
                return None
            gid, peer = rng.choice(leaders)
            run.pending_failover[gid] = (time.time(), peer)
            self.pause(peer, 4.0)
            return f"SIGSTOP leader {peer} of {gid} for 4 s"
        if action == "cut-transfer":
            members = run._members()
            if not members:
                return None
            peer = rng.choice(members)
            cut_gid = run.invariants.role[peer][0]
            assert cut_gid is not None
            # the next round starts round_pause after the last one: cut just after it starts
            at, _ = run.invariants.last_round.get(cut_gid, (time.time(), ""))
            wait = min(3.0, max(0.0, at + run.config.round_pause + 0.1 - time.time()))
            run.later(wait, f"cut {peer} off mid-round", lambda: self.cut(peer, 3.0))
            return f"cut member {peer} of {cut_gid} off in {wait:.1f} s, for 3 s"
        if action == "partition":
            if not run.lan or run.partitioned:
                return None
            return self.partition(run.config.partition_seconds)
        raise ValueError(action)

    def kill(self, name: str, restart_after: float) -> None:
        """SIGKILL ``name``; restart it ``restart_after`` s later."""
        run = self.run
        peer = run.net.peers[name]
        run.expected_down.add(name)
        run.invariants.role[name] = (None, "none")  # a restarted node starts from nothing
        peer.signal(signal.SIGKILL)
        run.summary.kills += 1
        run.later(restart_after, f"restart {name}", lambda: self.restart(name))

    def restart(self, name: str) -> None:
        run = self.run
        run.stopped.discard(name)
        peer = run.net.peers[name]
        if peer.popen is not None:  # SIGKILLed, but on a loaded host it may not be gone yet
            with contextlib.suppress(subprocess.TimeoutExpired):
                peer.popen.wait(10)
        if name in run.nodes:  # same identity and data; a founder now joins like anyone
            run._start_node(name, run.nodes.index(name), found=False)
        else:
            run.net.restart(name)
        run.expected_down.discard(name)
        run.summary.restarts += 1

    def cut(self, name: str, seconds: float) -> None:
        """Its link down (on loopback: SIGSTOP, the closest thing), then back."""
        run = self.run
        lan = run.lan
        if lan is None:
            self.pause(name, seconds)
            return
        lan.link_down(run.host_of[name])
        run.later(seconds, f"reconnect {name}", lambda: lan.link_up(run.host_of[name]))

    def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP ``name``, SIGCONT it ``seconds`` later."""
        run = self.run
        peer = run.net.peers[name]
        run.stopped.add(name)
        peer.signal(signal.SIGSTOP)

        def resume() -> None:
            run.stopped.discard(name)
            peer.signal(signal.SIGCONT)

        run.later(seconds, f"SIGCONT {name}", resume)

    def partition(self, seconds: float) -> str:
        """Cut the LAN in two for ``seconds``, then heal it and expect one network again."""
        run = self.run
        assert run.lan is not None
        lan = run.lan
        names = run.seeds + run.nodes
        # seed1 and half the nodes, drawn anew each time. (Every other node, as this was,
        # put whole data domains on each side: node i is in domain i % 4, so no group was
        # ever split and nothing was founded while cut off.)
        cut = run.rng.sample(run.nodes, len(run.nodes) // 2)
        side_b = [run.host_of[n] for n in [*run.seeds[1:2], *cut]]
        before = run.group_count()
        lan.partition(side_b)
        run.partitioned = True
        run.summary.partitions += 1
        cut_at = time.time()

        def heal() -> None:
            lan.heal()
            run.partitioned = False
            run._expect_healed()
            run._expect_consolidated(cut_at, time.time(), before)

        run.later(seconds, "heal the partition", heal)
        return (
            f"partition: {len(side_b)} hosts cut from {len(names) - len(side_b)} for {seconds:g} s"
        )
