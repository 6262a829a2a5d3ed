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

from bench.lab.procfs import is_alive, start_ticks
from bench.lab.state import Resource


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
    return is_alive(resource.pid, resource.start_ticks)


def _reap(pid: int) -> bool:
    # Our own child must be reaped, or it lingers as a zombie. Returns False
    # so it can sit in a filter.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return False


def stop_processes(resources: Sequence[Resource], timeout: float = 3.0) -> None:
    """SIGTERM them all, wait up to ``timeout`` for them to go, then SIGKILL the rest."""
    running = list(resources)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        running = [r for r in running if is_running(r) or _reap(r.pid)]
        for resource in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(resource.pid, sig)
        deadline = time.monotonic() + timeout
        while running and time.monotonic() < deadline:
            for resource in running:
                _reap(resource.pid)
            running = [r for r in running if is_running(r)]
            if running:
                time.sleep(0.01)
        if not running:
            return


def stop_process(resource: Resource, timeout: float = 3.0) -> None:
    """Stop one process: SIGTERM, then SIGKILL after ``timeout``."""
    stop_processes([resource], timeout)


def running_process(pid: int, what: str) -> Resource:
    """A Resource for a process found running now (PID plus its start time)."""
    return Resource(kind="process", name=what, pid=pid, start_ticks=start_ticks(pid))


def netns_pids(netns: str) -> list[int]:
    """PIDs of every process still running inside ``netns``."""
    done = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def pids_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (e.g. a lab's state directory).

    Every daemon the bench starts for a lab is given files from that lab's
    state directory, so this finds them even when no journal names them.
    """
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found
