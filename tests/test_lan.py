"""The LAN harness (mycelium_p2p/testing/netns.py, scripts/lan.py): hosts as network namespaces.

Needs root and iproute2; every test skips with the reason elsewhere.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from mycelium_p2p.testing.lan_nodes import NODE_PORT, start_network
from mycelium_p2p.testing.netns import Lan, cleanup_stale, namespaces, netns_unavailable
from mycelium_p2p.testing.procs import REPO

UNAVAILABLE = netns_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9000))
while True:
    data, peer = s.recvfrom(100)
    s.sendto(data, peer)
"""
PING = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(b"ping", (sys.argv[1], 9000))
print(s.recvfrom(100)[0].decode())
"""


def reaches(lan: Lan, host: int, target: int) -> bool:
    result = lan.exec(host, [sys.executable, "-c", PING, lan.addr(target)], timeout=10)
    return result.stdout.strip() == "ping"


def eventually_reaches(lan: Lan, host: int, target: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not reaches(lan, host, target):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_hosts_talk_over_the_bridge_and_link_down_or_partition_cuts_them_off() -> None:
    with Lan(4) as lan:
        for i in (0, 3):
            lan.spawn(i, f"echo{i}", [sys.executable, "-c", ECHO, lan.addr(i)])
        assert eventually_reaches(lan, 1, 0) and eventually_reaches(lan, 2, 3)
        lan.link_down(1)
        assert not reaches(lan, 1, 0)
        assert reaches(lan, 2, 0)
        lan.link_up(1)
        assert eventually_reaches(lan, 1, 0)
        lan.partition([2, 3])
        assert not reaches(lan, 2, 0) and not reaches(lan, 1, 3)
        assert reaches(lan, 1, 0) and reaches(lan, 2, 3)
        lan.heal()
        assert eventually_reaches(lan, 2, 0) and eventually_reaches(lan, 1, 3)
    assert lan.leftovers() == []


def test_cleanup_removes_the_runs_of_dead_owners_only() -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from mycelium_p2p.testing.netns import Lan\n"
            "import time\nlan = Lan(2).up()\nprint(lan.prefix, flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert owner.stdout is not None
        prefix = owner.stdout.readline().strip()
        assert prefix.startswith("myc"), prefix
    finally:
        owner.send_signal(signal.SIGKILL)  # no teardown: what a crash leaves
        owner.wait(10)
    with Lan(1) as live:
        left = [ns for ns in namespaces() if ns.startswith(prefix + "-")]
        assert len(left) == 3  # bridge and two hosts
        removed = cleanup_stale()
        assert set(left) <= set(removed)
        assert not [ns for ns in namespaces() if ns.startswith(prefix + "-")]
        assert live.ns(0) in namespaces()  # a live run is not touched
    assert live.leftovers() == []


@pytest.mark.slow
def test_groups_form_across_namespaces_and_teardown_leaves_nothing() -> None:
    with Lan(4) as lan:  # host 0 the seed, hosts 1-3 one `join` each
        net = start_network(lan, join_args=("--round-pause", "0.2"))
        observer = 3  # query from a host other than the seed's
        (group,) = net.wait_for_members(observer, members=3, timeout=60)
        assert group["leader"] == f"{lan.addr(1)}:{NODE_PORT}"  # the founder leads
        expected = sorted(f"{lan.addr(i)}:{NODE_PORT}" for i in (1, 2, 3))
        deadline = time.monotonic() + 20
        while sorted(n["addr"] for n in net.query_json(observer, "nodes")) != expected:
            assert time.monotonic() < deadline, net.query_json(observer, "nodes")
            time.sleep(1.0)
        assert all(proc.popen.poll() is None for proc in lan.procs)
    assert lan.leftovers() == []
    codes = [proc.popen.returncode for proc in net.joins]
    assert codes == [0] * len(codes), "\n".join(
        f"--- {proc.name} exited with {code}:\n{proc.output()[-3000:]}"
        for proc, code in zip(net.joins, codes, strict=True)
    )
