"""Processes of a benchmark arm: started with their output in files, their whole process trees
sampled for peak RSS (VmHWM, Linux), and every one of them stopped by PID at the end."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kind_of(proc: psutil.Process) -> str:
    """A process's kind: the script it runs (flower-supernode, flwr-clientapp, join, ...)."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    if "mycelium_p2p" in cmd:
        return "mycelium " + cmd[cmd.index("mycelium_p2p") + 1]
    for arg in cmd[:2]:
        name = Path(arg).name
        if name.startswith(("flwr", "flower")):
            return name
    return Path(cmd[0]).name if cmd else "?"


def high_water_kb(pid: int) -> int:
    """The process's peak RSS so far (VmHWM), in kB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class Fleet:
    """The processes of one arm: started, sampled for peak RSS, and stopped by PID."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.roots: list[subprocess.Popen[bytes]] = []
        self.seen: dict[int, psutil.Process] = {}  # every process of the trees, ever
        self.peak_kb: dict[int, int] = {}
        self.peak_total_kb = 0  # the largest sum of the live processes' RSS in one sample
        self.kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()

    def start(self, name: str, args: list[str]) -> Path:
        """Start ``args`` with stdout and stderr to TMP/NAME.log; returns the log's path."""
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            self.roots.append(
                subprocess.Popen(
                    args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmp
                )
            )
        return log

    def _sample_loop(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def sample(self) -> None:
        total = 0
        for root in list(self.roots):
            try:
                tree = [psutil.Process(root.pid)]
                tree += tree[0].children(recursive=True)
            except psutil.Error:
                continue
            for proc in tree:
                self.seen.setdefault(proc.pid, proc)
                # each time: a child forked by a SuperNode runs its cmdline until it execs,
                # and exec starts a new peak (VmHWM) for the new program
                hwm = high_water_kb(proc.pid)
                kind = kind_of(proc)
                if kind != "?" and kind != self.kinds.get(proc.pid, kind):
                    self.peak_kb[proc.pid] = 0
                if kind != "?":
                    self.kinds[proc.pid] = kind
                self.peak_kb[proc.pid] = max(self.peak_kb.get(proc.pid, 0), hwm)
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss // 1024
        self.peak_total_kb = max(self.peak_total_kb, total)

    def rss_by_kind(self) -> dict[str, dict[str, float]]:
        """Per kind: processes seen, largest peak (MB), sum of peaks (MB)."""
        out: dict[str, dict[str, float]] = {}
        for pid, kb in self.peak_kb.items():
            if kb == 0:
                continue
            entry = out.setdefault(self.kinds[pid], {"count": 0, "max_mb": 0.0, "sum_mb": 0.0})
            entry["count"] += 1
            entry["max_mb"] = max(entry["max_mb"], kb / 1024)
            entry["sum_mb"] += kb / 1024
        return {k: {f: round(v, 1) for f, v in e.items()} for k, e in sorted(out.items())}

    def stop(self) -> None:
        """SIGTERM every process ever seen (roots last), SIGKILL what is left after 5 s."""
        self.sample()
        self._stop.set()
        self._sampler.join(timeout=2)
        procs = [p for p in self.seen.values() if p.pid not in {r.pid for r in self.roots}]
        for root in self.roots:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(root.pid))
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()  # psutil checks the PID still names the same process
        _, alive = psutil.wait_procs(procs, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        for root in self.roots:
            root.wait(timeout=5)


def wait_log(path: Path, pattern: str, deadline: float, fleet: Fleet) -> re.Match[str]:
    """Poll a log file until a line matches ``pattern`` (or fail at the deadline)."""
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        text = ANSI.sub("", path.read_text(errors="replace")) if path.exists() else ""
        if m := regex.search(text):
            return m
        if any(r.poll() is not None for r in fleet.roots):
            raise RuntimeError(f"a process exited early; {path.name}:\n{text[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"{path.name} never printed {pattern!r}")
