"""Doorbells and interrupts between processes: named FIFOs with event suppression.

A doorbell (driver -> device) and an interrupt (device -> driver) are each one
FIFO in the run directory. The side that waits sets an "armed" word in shared
memory before it sleeps; the other side writes a byte only when it finds the
word set (and clears it), so a busy data path makes no system call per frame
— virtio's notification suppression, an MSI-X vector's mask bit.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class Fifo:
    """One end of a notification FIFO (opened read-write so it never sees EOF)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        if create:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.mkfifo(path, 0o600)
        elif not stat.S_ISFIFO(path.stat().st_mode):
            raise OSError(f"{path} is not a FIFO")
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.owner = create

    def fileno(self) -> int:
        return self.fd

    def notify(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the reader has plenty to wake it
            os.write(self.fd, b"\x01")

    def drain(self) -> int:
        """Consume pending notifications; returns how many bytes were pending."""
        count = 0
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return count
            count += len(data)
            if len(data) < 4096:
                return count

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
