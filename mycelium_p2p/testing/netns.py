"""A LAN on one Linux machine: hosts are network namespaces on one bridge.

A run with prefix P (``myc<pid><letter>``, unique per process and instance) creates::

    namespace P-br    bridge P-br, and one veth end P-b<i> per host, enslaved to it
                      (and bridge P-bx while the LAN is partitioned)
    namespace P-h<i>  the other end P-h<i>, address 198.18.0.<i+1>/24, and lo

198.18.0.0/15 is reserved for benchmarking networks (RFC 2544), so the harness never collides
with a real network, and nothing is created in the root namespace: stopping the processes a run
started and deleting its namespaces removes every trace of it. A run whose owner died (SIGKILL,
a crash) leaves namespaces named after a dead pid; ``cleanup_stale`` removes those, and only
those. Processes started in a host (``hostproc.HostProc``) die with their starter
(PR_SET_PDEATHSIG), so a killed harness leaves no nodes behind either. A mycelium-p2p network
on a ``Lan`` (a seed and joins): ``lan_nodes.py``.

    with Lan(4) as lan:
        seed = lan.spawn(0, "seed", [*CLI, "bootstrap", "--host", lan.addr(0)])
        lan.link_down(2)        # host 2 is cut off (a pulled cable: packets vanish)
        lan.partition([1, 2])   # hosts 1 and 2 reach each other only; lan.heal() undoes it
        lan.exec(1, [*CLI, "groups", "-b", f"{lan.addr(0)}:8468"])  # runs it in host 1
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from .hostproc import HostProc
from .procs import REPO, pid_alive

SUBNET = "198.18.0"  # hosts are SUBNET.1 ... SUBNET.<n>, /24
MAX_HOSTS = 99  # link names must fit in 15 bytes: "myc" + pid + letter + "-b99"
IP_TIMEOUT = 10.0  # seconds for one `ip` command
PREFIX_RE = re.compile(r"^myc(\d+)[a-z]-")
ARP_SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")  # one ARP table for every namespace
RUN_MARKER = ".mycelium-lan"  # in a run's temp dir, so cleanup removes only our directories

# A host firewall as the LAN runbook (docs/operations.md) has it (nft; the host's namespace only).
FIREWALL = """table inet mycelium {{
    chain input {{
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        iif lo accept
{accept}
    }}
}}
"""

_instances = itertools.count()


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here; the message says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None when they can (probes once)."""
    if os.uname().sysname != "Linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root or under sudo)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"myc{os.getpid()}z-probe"
    try:
        added = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` failed: {exc}"
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def namespaces() -> list[str]:
    """Names of all named network namespaces."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def root_links() -> list[str]:
    """Names of the links in the root namespace."""
    out = _ip("-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _pids_in(ns: str) -> list[int]:
    result = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _kill_pids(pids: list[int], timeout: float = 5.0) -> None:
    """SIGTERM the given processes, SIGKILL those still there after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
            time.sleep(0.1)
        if not any(pid_alive(pid) for pid in pids):
            return


def _delete_namespace(ns: str) -> None:
    """Stop whatever still runs inside ``ns`` (only our own processes live there), delete it."""
    _kill_pids(_pids_in(ns))
    _ip("netns", "del", ns, check=False)


def cleanup_stale() -> list[str]:
    """Remove namespaces and temp dirs of runs whose owning process is dead; returns them."""
    removed = []
    for ns in namespaces():
        m = PREFIX_RE.match(ns)
        if m and not pid_alive(int(m.group(1))):
            _delete_namespace(ns)
            removed.append(ns)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob("myc*-*"):
        m = PREFIX_RE.match(path.name)
        if m and (path / RUN_MARKER).exists() and not pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


class Lan:
    """``hosts`` network namespaces on one bridge; a context manager that tears it all down."""

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be 1..{MAX_HOSTS}, not {hosts}")
        self.hosts = hosts
        self.prefix = f"myc{os.getpid()}{'abcdefghijklmnopqrstuvwxy'[next(_instances) % 25]}"
        self.bridge_ns = f"{self.prefix}-br"
        self.procs: list[HostProc] = []
        self.created: list[str] = []  # namespaces, in creation order
        self._arp_saved: dict[str, int] = {}  # ARP table sizes we raised, to put back
        self.workdir: Path | None = None

    def ns(self, i: int) -> str:
        return f"{self.prefix}-h{i}"

    def addr(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def host_link(self, i: int) -> str:
        """The host's own interface (inside its namespace)."""
        return f"{self.prefix}-h{i}"

    def bridge_port(self, i: int) -> str:
        """The bridge side of host ``i``'s cable (inside the bridge namespace)."""
        return f"{self.prefix}-b{i}"

    def up(self) -> Lan:
        """Create the bridge and the hosts. Raises NetnsUnavailable if namespaces cannot be made."""
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        (self.workdir / RUN_MARKER).write_text(f"{os.getpid()}\n")
        self._make_arp_room()
        self._add_namespace(self.bridge_ns)
        br = self.bridge_ns
        _ip("-n", br, "link", "add", br, "type", "bridge")
        _ip("-n", br, "link", "set", br, "up")
        for i in range(self.hosts):
            ns = self.ns(i)
            self._add_namespace(ns)
            port, link = self.bridge_port(i), self.host_link(i)
            _ip("-n", br, "link", "add", port, "type", "veth", "peer", "name", link, "netns", ns)
            _ip("-n", br, "link", "set", port, "master", br, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def _make_arp_room(self) -> None:
        """Grow the kernel's ARP table for this LAN; ``teardown`` puts the old sizes back.

        The table is one for all namespaces (``gc_thresh3``: 1024 entries by default). Every
        host talks to every other, so 52 hosts need about 2,700 entries, and once the table is
        full the hosts without entries are silently cut off (the kernel logs "neighbor table
        overflow"): a 50-node run lost 8 nodes that way. Real machines have a table each.
        """
        need = 2 * self.hosts * self.hosts
        for name, size in (("gc_thresh3", need), ("gc_thresh2", need // 2)):
            path = ARP_SYSCTL / name
            try:
                old = int(path.read_text())
                if old < size:
                    path.write_text(f"{size}\n")
                    self._arp_saved[name] = old
            except (OSError, ValueError):
                return  # not root or no such knob: small LANs fit anyway

    def _restore_arp(self) -> None:
        for name, old in reversed(self._arp_saved.items()):
            with contextlib.suppress(OSError):
                (ARP_SYSCTL / name).write_text(f"{old}\n")
        self._arp_saved.clear()

    def _add_namespace(self, ns: str) -> None:
        result = _ip("netns", "add", ns, check=False)
        if result.returncode != 0:
            raise NetnsUnavailable(f"`ip netns add {ns}` failed: {result.stderr.strip()}")
        self.created.append(ns)

    def exec(
        self, i: int, args: list[str], timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in host ``i`` to completion (output captured)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(i), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            check=False,
        )

    def firewall(self, i: int, *accept: str) -> None:
        """Host ``i`` drops incoming packets except replies, loopback and the ``accept`` rules."""
        ruleset = FIREWALL.format(accept="\n".join(f"        {rule} accept" for rule in accept))
        result = subprocess.run(
            ["ip", "netns", "exec", self.ns(i), "nft", "-f", "-"],
            input=ruleset,
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"nft in {self.ns(i)}: {result.stderr.strip()}")

    def spawn(self, i: int, name: str, args: list[str]) -> HostProc:
        """Start a long-running command in host ``i``; it is stopped on teardown."""
        assert self.workdir is not None, "call up() first"
        proc = HostProc(name, self.ns(i), args, self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def data_dir(self, name: str) -> Path:
        """A fresh directory in this run's temp dir (removed on teardown)."""
        assert self.workdir is not None, "call up() first"
        path = self.workdir / name
        path.mkdir()
        return path

    def link_down(self, i: int) -> None:
        """Unplug host ``i``: its bridge port goes down, so packets to and from it vanish."""
        _ip("-n", self.bridge_ns, "link", "set", self.bridge_port(i), "down")

    def link_up(self, i: int) -> None:
        """Plug host ``i`` back in."""
        _ip("-n", self.bridge_ns, "link", "set", self.bridge_port(i), "up")

    def partition(self, side: Iterable[int]) -> None:
        """Split the LAN: hosts in ``side`` get a bridge of their own and reach only each other."""
        br, split = self.bridge_ns, f"{self.prefix}-bx"
        if split not in _ip("-n", br, "-o", "link", "show").stdout:
            _ip("-n", br, "link", "add", split, "type", "bridge")
            _ip("-n", br, "link", "set", split, "up")
        for i in side:
            _ip("-n", br, "link", "set", self.bridge_port(i), "master", split)

    def heal(self) -> None:
        """Undo ``partition``: every host back on the one bridge."""
        br, split = self.bridge_ns, f"{self.prefix}-bx"
        for i in range(self.hosts):
            _ip("-n", br, "link", "set", self.bridge_port(i), "master", br)
        _ip("-n", br, "link", "del", split, check=False)

    def teardown(self) -> None:
        """Stop our processes by pid, then delete our namespaces and temp dir. Idempotent."""
        for proc in reversed(self.procs):  # joins before the seed, all at once
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            proc.stop(signalled=True)
            proc.output()  # keep it: the log goes with the temp dir
        for ns in reversed(self.created):
            _delete_namespace(ns)
        self.created.clear()
        self._restore_arp()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Anything of this run still present: namespaces, root links, processes, temp dir."""
        found = [f"namespace {ns}" for ns in namespaces() if ns.startswith(self.prefix + "-")]
        found += [f"link {ln}" for ln in root_links() if ln.startswith(self.prefix + "-")]
        found += [f"process {p.pid} ({p.name})" for p in self.procs if pid_alive(p.pid)]
        if self.workdir is not None:
            mark = str(self.workdir).encode()
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if mark in cmdline.read_bytes():
                        found.append(f"process {cmdline.parent.name} using {self.workdir}")
                except OSError:
                    continue
            if self.workdir.exists():
                found.append(f"directory {self.workdir}")
        return found

    def __enter__(self) -> Lan:
        try:
            return self.up()
        except BaseException:
            self.teardown()
            raise

    def __exit__(self, *exc: object) -> None:
        self.teardown()
