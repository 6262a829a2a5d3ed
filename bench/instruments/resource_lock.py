"""One user of an instrument at a time, across processes: a flock'ed file per VISA resource.

Two bench processes driving the same power supply would undo each other's
settings mid-test; the second one is told who holds the instrument instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from pathlib import Path

from bench.instruments.errors import InstrumentBusy

#: Where the per-resource lock files live unless ``NPABENCH_LOCK_DIR`` says otherwise.
#: The standard place for lock files, and outside the labs' state root (not mistaken for a lab).
DEFAULT_LOCK_DIR = Path("/run/lock/npabench")


def lock_dir_default() -> Path:
    """The lock directory: ``$NPABENCH_LOCK_DIR`` or ``/run/lock/npabench``."""
    env = os.environ.get("NPABENCH_LOCK_DIR")
    return Path(env) if env else DEFAULT_LOCK_DIR


class ResourceLock:
    """A cross-process lock on one VISA resource (``flock`` on a lock file).

    The file name is a hash of the resource string; the holder writes its PID
    into it so that a busy error can say who holds the instrument.
    """

    def __init__(self, resource: str, lock_dir: Path | None = None) -> None:
        digest = hashlib.sha256(resource.strip().lower().encode()).hexdigest()[:16]
        self.path = (lock_dir or lock_dir_default()) / f"{digest}.lock"
        self._fd: int | None = None

    def holder(self) -> str:
        """What the lock file says about its holder ("pid N (name)"), or "unknown"."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return "unknown"
        return text or "unknown"

    def acquire(self, instrument: str, owner: str, wait_s: float) -> None:
        """Take the lock, waiting up to ``wait_s``; raise :class:`InstrumentBusy`.

        The holder removes the file when it lets go (no lock files pile up), so
        a lock taken on a file that was meanwhile removed does not count: the
        file locked must still be the one at the path.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise InstrumentBusy(
                        instrument,
                        f"in use by another driver: {self.holder()} holds {self.path} "
                        f"(waited {wait_s:g} s)",
                    ) from None
                time.sleep(0.05)
                continue
            try:
                same = os.fstat(fd).st_ino == self.path.stat().st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed it: lock the new file instead
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({owner})\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # before unlocking: a waiter then sees the file is gone
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
