"""One QEMU process the bench started: its PID, its QMP socket, its logs, and its stop.

QEMU runs in a session of its own (a Ctrl-C at the terminal reaches the controller,
which stops QEMU in order, not QEMU directly). It is stopped by PID only: QMP ``quit``
first, then SIGTERM, then SIGKILL, each with a deadline, and a PID is only signalled
while it still is the process that was started (its kernel start time is checked).
The command line names the process's work directory, so a lab's teardown sweep finds
a QEMU whose journal entry was lost.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.errors import LabError
from bench.lab.procfs import is_alive, start_ticks
from bench.qemu.accel import QEMU_BINARY
from bench.qemu.qmp import QmpClient, QmpError, wait_for_socket

#: Seconds QEMU gets to quit after QMP ``quit`` (and again after SIGTERM).
STOP_GRACE_S = 5.0


def _terminate_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the parent goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class QemuProcess:
    """A started ``qemu-system-x86_64``; use as a context manager or call :meth:`stop`."""

    def __init__(
        self,
        argv: Sequence[str],
        work_dir: Path,
        name: str = "qemu",
        die_with_controller: bool = False,
    ) -> None:
        self.work_dir = work_dir
        #: SIGTERM QEMU when the controller dies (a test session's QEMU; never a lab's,
        #: which outlives the ``npabench up`` that booted it).
        self.die_with_controller = die_with_controller
        self.name = name
        self.qmp_socket = work_dir / f"{name}.qmp"
        self.console_log = work_dir / f"{name}.console.log"
        self.log = work_dir / f"{name}.log"
        self.argv = [
            QEMU_BINARY,
            *argv,
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-serial", f"file:{self.console_log}",
        ]  # fmt: skip
        self._popen: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.start_ticks = 0

    def start(self, timeout: float = 10.0) -> None:
        """Start QEMU and wait until its QMP socket answers."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.qmp_socket.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # prctl only, before exec: nothing that a thread could hold a lock in
                preexec_fn=_terminate_with_parent if self.die_with_controller else None,  # noqa: PLW1509
            )
        self.pid = self._popen.pid
        self.start_ticks = start_ticks(self.pid)
        try:
            wait_for_socket(self.qmp_socket, time.monotonic() + timeout, self.alive)
        except QmpError as err:
            self.stop()
            raise LabError(f"{self.name}: {err}; QEMU said: {self.log_tail()}") from None

    def alive(self) -> bool:
        """Whether the QEMU process still runs."""
        if self._popen is not None:
            return self._popen.poll() is None
        return self.pid > 0 and is_alive(self.pid, self.start_ticks)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines QEMU wrote to its stdout/stderr."""
        with contextlib.suppress(OSError):
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def qmp(self, timeout: float = 5.0) -> QmpClient:
        """A fresh QMP session (close it when done)."""
        return QmpClient(self.qmp_socket, timeout)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        """Stop QEMU: QMP quit, then SIGTERM, then SIGKILL; a no-op once it is gone."""
        if self.pid == 0 or not self.alive():
            self._reap()
            return
        with contextlib.suppress(QmpError, OSError):
            client = self.qmp(timeout=2.0)
            with contextlib.suppress(QmpError, OSError):
                client.execute("quit")
            client.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._wait_gone(STOP_GRACE_S):
                break
            if is_alive(self.pid, self.start_ticks):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, sig)
        self._wait_gone(STOP_GRACE_S)
        self._reap()
        self.qmp_socket.unlink(missing_ok=True)

    def _reap(self) -> None:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
