"""A network of real ``mycelium-p2p`` processes on one machine, for the demo and chaos runs.

``LocalNet`` starts a bootstrap peer and ``join`` nodes as child processes (optionally behind a
command prefix such as ``ip netns exec HOST``), keeps their output in log files and their events
(``join --events``) in JSON-lines files, follows those events, and stops every process it
started, by PID. Children get SIGTERM if this process dies (``PR_SET_PDEATHSIG``), so even a
killed parent leaves no node behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import LocalNetError

CLI = [sys.executable, "-m", "mycelium_p2p"]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):  # not Linux: stop_all() still applies
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Peer:
    """One child process: a bootstrap peer or a node."""

    name: str
    args: list[str]
    log_path: Path
    events_path: Path | None
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log: IO[bytes] | None = None
    _offset: int = 0
    _partial: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def start(self, prefix: Sequence[str] = ()) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [*prefix, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        self.started_at = time.monotonic()

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if the process still runs; True if sent."""
        if not self.alive:
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a clean leave), SIGKILL after ``timeout``; returns the exit code."""
        if self.popen is None:
            return None
        if self.alive:
            self.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def new_events(self) -> Iterator[dict[str, Any]]:
        """Events written since the last call (whole lines only)."""
        if self.events_path is None:
            return
        try:
            with open(self.events_path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                event["peer"] = self.name
                yield event


class LocalNet:
    """Child processes of one local network, all under ``workdir``.

    Use as a context manager: leaving it stops every process that is still running.
    """

    def __init__(self, workdir: Path, prefix: Sequence[str] = ()) -> None:
        self.workdir = Path(workdir)
        self.prefix = list(prefix)
        self.peers: dict[str, Peer] = {}
        self.started_pids: list[int] = []  # every process ever started, restarts included

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- starting --------------------------------------------------------------------------------

    def start_bootstrap(
        self,
        name: str = "seed",
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 60.0,
        prefix: Sequence[str] | None = None,
    ) -> tuple[str, int]:
        """Start ``mycelium-p2p bootstrap``; returns its address once it listens."""
        args = [
            *CLI,
            "bootstrap",
            "--host",
            host,
            "--port",
            str(port),
            "--data-dir",
            str(self.workdir / name),
        ]
        peer = self._start(name, args, events=False, prefix=prefix)
        text = self.wait_for_output(peer, r"listening on udp \S+?:(\d+)", timeout)
        return host, int(text.group(1))

    def start_node(
        self,
        name: str,
        bootstrap: Sequence[tuple[str, int]],
        *options: str,
        host: str = "127.0.0.1",
        prefix: Sequence[str] | None = None,
        **meta: Any,
    ) -> Peer:
        """Start ``mycelium-p2p join`` with ``options``; returns without waiting."""
        # -v: the group layer's own lines too (elections, refusals), for whoever reads the logs
        args = [*CLI, "-v", "join", "--host", host, "--data-dir", str(self.workdir / name)]
        for h, p in bootstrap:
            args += ["--bootstrap", f"{h}:{p}"]
        args += ["--events", str(self.workdir / "events" / f"{name}.jsonl"), *options]
        peer = self._start(name, args, events=True, prefix=prefix)
        peer.meta.update(meta)
        return peer

    def start(self, name: str, args: list[str], prefix: Sequence[str] | None = None) -> Peer:
        """Start any long-running command (an observer, say) as a peer of this network."""
        return self._start(name, args, events=False, prefix=prefix)

    def restart(self, name: str) -> Peer:
        """Start a stopped or killed peer again with the same arguments and data directory."""
        old = self.peers[name]
        return self._start(name, old.args, events=old.events_path is not None, prefix=None)

    def _start(
        self, name: str, args: list[str], *, events: bool, prefix: Sequence[str] | None
    ) -> Peer:
        if not re.fullmatch(r"[\w.-]+", name):
            raise LocalNetError(f"bad peer name {name!r}")
        old = self.peers.get(name)
        if old is not None and old.alive:
            raise LocalNetError(f"{name} is still running (pid {old.pid})")
        (self.workdir / "events").mkdir(parents=True, exist_ok=True)
        peer = Peer(
            name,
            args,
            self.workdir / "logs" / f"{name}.log",
            self.workdir / "events" / f"{name}.jsonl" if events else None,
        )
        if old is not None:  # the same files go on: events already read are not read again
            old.stop()
            peer._offset, peer._partial, peer.meta = old._offset, old._partial, dict(old.meta)
        if prefix is None:
            prefix = peer.meta.get("prefix", self.prefix)
        peer.meta["prefix"] = list(prefix)
        peer.start(prefix)
        self.started_pids.append(peer.pid)
        self.peers[name] = peer
        return peer

    def wait_for_output(self, peer: Peer, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until ``peer``'s output matches ``pattern`` (fails early if it exits)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := regex.search(peer.output()):
                return m
            if not peer.alive:
                break
            time.sleep(0.1)
        tail = "\n".join(peer.output().splitlines()[-20:])
        raise LocalNetError(f"{peer.name} did not print {pattern!r} in {timeout:.0f} s:\n{tail}")

    # -- following and stopping ------------------------------------------------------------------

    def new_events(self) -> list[dict[str, Any]]:
        """Every peer's new events, oldest first."""
        events = [e for peer in self.peers.values() for e in peer.new_events()]
        events.sort(key=lambda e: e.get("t", 0.0))
        return events

    def running(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.alive]

    def stop_all(self, timeout: float = 10.0) -> dict[str, int | None]:
        """Stop every peer (all get SIGTERM at once, then SIGKILL); returns exit codes."""
        for peer in self.peers.values():
            peer.signal(signal.SIGCONT)
            peer.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for peer in self.peers.values():
            if peer.popen is not None and peer.alive:
                try:
                    peer.popen.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    peer.signal(signal.SIGKILL)
        return {name: peer.stop(timeout) for name, peer in self.peers.items()}
