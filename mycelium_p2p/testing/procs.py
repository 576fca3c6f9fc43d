"""Starting mycelium-p2p processes in tests, reading what they print, and stopping them by PID."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# child processes run from the checkout, so they can import the tests' small apps
_ROOT = Path(__file__).resolve().parents[2]
REPO = _ROOT if (_ROOT / "tests").is_dir() else Path.cwd()
CLI = [sys.executable, "-m", "mycelium_p2p"]


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Proc:
    """A child process whose stdout is read line by line, with deadlines."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        return self.popen.pid

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait for an output line matching ``pattern``."""
        regex = re.compile(pattern)
        for line in self.lines:
            if m := regex.search(line):
                return m
        assert self.popen.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.popen.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                line = self.popen.stdout.readline()
                if not line:
                    break
                self.lines.append(line.rstrip("\n"))
                if m := regex.search(line):
                    return m
        finally:
            sel.close()
        raise AssertionError(f"{self.args!r} never printed {pattern!r}; output:\n" + self.output())

    def output(self) -> str:
        return "\n".join(self.lines)

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.popen.wait(timeout)
        if self.popen.stdout is not None and not self.popen.stdout.closed:
            self.lines += self.popen.stdout.read().splitlines()
            self.popen.stdout.close()
        return code


@contextmanager
def processes() -> Iterator[list[Proc]]:
    """A list to start processes into; every one still running is stopped at the end."""
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def start_seed(procs: list[Proc], data_dir: Path) -> int:
    """Start `mycelium-p2p bootstrap` on a free loopback port; returns the port."""
    seed = Proc(
        [*CLI, "bootstrap", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)]
    )
    procs.append(seed)
    return int(seed.expect(r"listening on udp 127\.0\.0\.1:(\d+)").group(1))


def start_join(procs: list[Proc], port: int, data_dir: Path, *extra: str) -> Proc:
    """Start `mycelium-p2p join` through the seed at ``port``; returns once it is in a group."""
    node = Proc(
        [
            *CLI,
            "join",
            "-b",
            f"127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--data-dir",
            str(data_dir),
            *extra,
        ]
    )
    procs.append(node)
    node.expect(r"(joined|founded) group", timeout=60)
    return node
