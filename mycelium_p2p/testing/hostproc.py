"""``HostProc``: a process started in one host's network namespace of a ``Lan``.

Its output goes to a log file, read with deadlines (``expect``). It dies with its starter
(PR_SET_PDEATHSIG), so a killed harness leaves no nodes behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from .procs import REPO

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class HostProc:
    """A process in one host's namespace; its output goes to a log file, read with deadlines."""

    def __init__(self, name: str, ns: str, args: list[str], log: Path) -> None:
        self.name, self.ns, self.args, self.log = name, ns, args, log
        self._seen = ""
        with open(log, "w") as out:
            self.popen = subprocess.Popen(
                ["ip", "netns", "exec", ns, *args],  # ip execs the command: same pid
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C reaches the harness only; it stops us in order
                preexec_fn=_die_with_parent,  # callers start processes from one thread
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """Everything it printed so far (after teardown: until its log was removed)."""
        with contextlib.suppress(FileNotFoundError):
            self._seen = self.log.read_text(errors="replace")
        return self._seen

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """Wait for a line of output matching ``pattern``; fail if it exits or time runs out."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            if m := regex.search(self.output()):
                return m
            code = self.popen.poll()
            if code is not None or time.monotonic() > deadline:
                why = f"exited with {code}" if code is not None else f"waited {timeout:g} s"
                raise AssertionError(
                    f"{self.name} never printed {pattern!r} ({why}); output:\n{self.output()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0, *, signalled: bool = False) -> int:
        """SIGTERM (unless ``signalled`` already: a second one would cut the clean shutdown
        short), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.popen.poll() is None and not signalled:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout)
