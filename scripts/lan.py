#!/usr/bin/env python3
"""A LAN of mycelium-p2p hosts on one Linux machine: each host is a network namespace.

`up` puts --hosts namespaces on one bridge (198.18.0.1/24, .2, ...), starts `mycelium-p2p
bootstrap` in host 0 and `mycelium-p2p join` in every other host (shard i/N of the digits data,
its own data dir, UDP and TCP port 8470), waits until they are in groups, and shows
`mycelium-p2p groups` run from the last host every --interval seconds for --duration seconds.
Then, or on Ctrl-C/SIGTERM/SIGHUP, it stops its processes by pid and deletes its namespaces.
`cleanup` removes what runs killed with SIGKILL left behind (namespaces named after a dead pid).
Needs root and iproute2; the hosts and links are in mycelium_p2p/testing/netns.py (class Lan).

    sudo .venv/bin/python scripts/lan.py up --hosts 6 [--duration 60] [--domains 2] [--json]
    sudo .venv/bin/python scripts/lan.py up --hosts 4 -- --heartbeat 0.5   # extra join options
    sudo .venv/bin/python scripts/lan.py cleanup

With --json the last line of `up` is {"prefix", "hosts", "formed_s", "groups", "nodes",
"leftovers"}. Exit code 0 when the groups formed and nothing was left behind, 1 otherwise, 2
when namespaces are unavailable here (the reason is printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import time

from mycelium_p2p.testing.lan_nodes import NODE_PORT, SEED_PORT, Network, start_network
from mycelium_p2p.testing.netns import Lan, NetnsUnavailable, cleanup_stale, netns_unavailable


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: unwind to the teardown."""


def _raise_stopped(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def show(net: Network, host: int, command: str) -> None:
    """Run `mycelium-p2p groups` or `nodes` in ``host`` and print it as typed there."""
    result = net.query(host, command)
    print(f"$ ip netns exec {net.lan.ns(host)} mycelium-p2p {command} -b {net.bootstrap}")
    print((result.stdout or result.stderr).rstrip(), flush=True)


def dump_logs(lan: Lan, lines: int = 15) -> None:
    """The last lines each process printed (their logs go with the teardown)."""
    for proc in lan.procs:
        state = "running" if proc.popen.poll() is None else f"exit {proc.popen.returncode}"
        tail = "\n".join(proc.output().splitlines()[-lines:])
        log(f"--- {proc.name} ({state}), last lines:\n{tail}")


def run(lan: Lan, args: argparse.Namespace, summary: dict) -> bool:
    """Bring the network up and watch it; True if every join ended up in a group."""
    lan.up()
    summary["prefix"] = lan.prefix
    log(f"{lan.hosts} hosts up: namespaces {lan.ns(0)} ... {lan.ns(lan.hosts - 1)}")
    for i in range(lan.hosts):
        role = f"seed, udp {SEED_PORT}" if i == 0 else f"join, udp+tcp {NODE_PORT}"
        log(f"  {lan.ns(i)}  {lan.addr(i)}  {role}")
    started = time.monotonic()
    net = start_network(
        lan,
        domains=args.domains,
        wildcard=args.wildcard,
        firewall=args.firewall,
        join_args=args.join_args,
    )
    summary["hosts"] = [
        {"ns": lan.ns(i), "addr": lan.addr(i), "pid": proc.pid, "role": proc.name.split("-")[1]}
        for i, proc in enumerate([net.seed, *net.joins])
    ]
    observer = lan.hosts - 1  # another host than the seed's
    joins = len(net.joins)
    log(f"seed and {joins} joins started; waiting for groups to hold {joins} members")
    try:
        summary["groups"] = net.wait_for_members(observer, joins, timeout=args.form_timeout)
    except TimeoutError as exc:
        log(str(exc))
        dump_logs(lan)
        return False
    summary["formed_s"] = round(time.monotonic() - started, 1)
    log(f"formed in {summary['formed_s']} s; running for {args.duration:g} s (Ctrl-C stops)")
    show(net, observer, "groups")
    show(net, observer, "nodes")
    end = time.monotonic() + args.duration
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(args.interval, left))
        if time.monotonic() < end:
            show(net, observer, "groups")
    summary["groups"] = net.query_json(observer, "groups")
    summary["nodes"] = net.query_json(observer, "nodes")
    return True


def up(args: argparse.Namespace) -> int:
    if reason := netns_unavailable():
        print(f"lan.py: network namespaces unavailable: {reason}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("mycelium_p2p") is None:
        print("lan.py: mycelium_p2p is not importable; run with .venv/bin/python", file=sys.stderr)
        return 2
    if stale := cleanup_stale():
        log(f"removed leftovers of dead runs: {' '.join(stale)}")
    summary: dict = {}
    lan = Lan(args.hosts)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stopped)
    ok = False
    try:
        ok = run(lan, args, summary)
    except NetnsUnavailable as exc:
        print(f"lan.py: network namespaces unavailable: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Stopped) as exc:
        log(f"interrupted ({str(exc) or 'SIGINT'}); tearing down")
    except Exception as exc:
        log(f"failed: {exc}")
        dump_logs(lan)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
        lan.teardown()
        summary["leftovers"] = lan.leftovers()
        log(f"torn down; leftovers: {summary['leftovers'] or 'none'}")
        if args.json:
            print(json.dumps(summary), flush=True)
    return 0 if ok and not summary["leftovers"] else 1


def cleanup(args: argparse.Namespace) -> int:
    if reason := netns_unavailable():
        print(f"lan.py: network namespaces unavailable: {reason}", file=sys.stderr)
        return 2
    removed = cleanup_stale()
    if args.json:
        print(json.dumps({"removed": removed}))
    else:
        print("\n".join(f"removed {name}" for name in removed) or "nothing to clean up")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start a LAN of hosts, show its groups, tear it down")
    p_up.add_argument("--hosts", type=int, default=4, help="hosts, the seed's included (2..99)")
    p_up.add_argument("--duration", type=float, default=30.0, help="seconds to run once formed")
    p_up.add_argument("--interval", type=float, default=10.0, help="seconds between `groups`")
    p_up.add_argument("--domains", type=int, default=1, help="join i gets domain i %% DOMAINS")
    p_up.add_argument(
        "--wildcard",
        action="store_true",
        help="joins listen on 0.0.0.0 and pick the address they advertise themselves",
    )
    p_up.add_argument(
        "--firewall",
        action="store_true",
        help="each host drops incoming packets but the ports docs/operations.md opens (needs nft)",
    )
    p_up.add_argument(
        "--form-timeout", type=float, default=120.0, help="seconds to wait for the groups"
    )
    p_up.add_argument("--json", action="store_true", help="a JSON summary as the last line")
    p_up.add_argument("join_args", nargs="*", help="after --: extra options for every join")
    p_clean = sub.add_parser("cleanup", help="remove what runs killed with SIGKILL left behind")
    p_clean.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.command == "up":
        if not 2 <= args.hosts <= 99:
            parser.error("--hosts must be 2..99")
        if not (0 <= args.duration <= 86400 and args.interval >= 1 and args.domains >= 1):
            parser.error("--duration 0..86400, --interval >= 1, --domains >= 1")
        return up(args)
    return cleanup(args)


if __name__ == "__main__":
    sys.exit(main())
