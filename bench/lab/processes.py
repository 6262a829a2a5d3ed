"""Processes the bench starts on the controller machine, and how they are stopped.

A process is identified by PID *and* its kernel start time, so a stop after
a crash never hits an unrelated process that inherited a recycled PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench.lab.state import Resource


def start_ticks(pid: int) -> int:
    """Kernel start time of ``pid`` in clock ticks (0 if it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # Field 22; the command name (field 2) may contain spaces, so split after ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def spawn_in_netns(netns: str, argv: Sequence[str], what: str, log: Path) -> Resource:
    """Start ``argv`` inside network namespace ``netns``; output goes to ``log``.

    The process gets its own session, so a Ctrl-C at the controller's terminal
    reaches the controller (which tears the lab down in order) and not the
    lab's daemons directly.
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Resource(kind="process", name=what, pid=proc.pid, start_ticks=start_ticks(proc.pid))


def is_running(resource: Resource) -> bool:
    """Whether the recorded process still exists (and is the same process)."""
    ticks = start_ticks(resource.pid)
    if ticks == 0 or (resource.start_ticks and ticks != resource.start_ticks):
        return False
    try:
        state = Path(f"/proc/{resource.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _reap(pid: int) -> None:
    # Our own child must be reaped, or it lingers as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_process(resource: Resource, timeout: float = 3.0) -> None:
    """SIGTERM, wait up to ``timeout`` for it to go, then SIGKILL."""
    if not is_running(resource):
        _reap(resource.pid)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(resource.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(resource.pid)
            if not is_running(resource):
                return
            time.sleep(0.01)


def netns_pids(netns: str) -> list[int]:
    """PIDs of every process still running inside ``netns``."""
    done = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def stop_netns_processes(netns: str, timeout: float = 3.0) -> None:
    """Stop whatever runs in one of the lab's own namespaces (the bench started all of it)."""
    for pid in netns_pids(netns):
        stop_process(
            Resource(kind="process", name=netns, pid=pid, start_ticks=start_ticks(pid)), timeout
        )
