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

The parts: ``config`` (what a run does, and its summary), ``invariants`` (what the node events
must never show, and checks with a deadline), ``observers`` (what the observers list),
``harm`` (the bad things done), ``expectations`` (what must hold after harm), ``trials``
(the formation benchmark's partition arm) and ``run`` (``ChaosRun``, which drives them).
"""

from .config import ChaosConfig, Summary
from .invariants import Invariants
from .run import ChaosRun

__all__ = ["ChaosConfig", "ChaosRun", "Invariants", "Summary"]
