"""Shared memory between the processes of the data path: guest memory, VF BARs, rings.

A region is a file in /dev/shm mapped by every process that needs it, the way
a VF's BAR and the guest's RAM are visible to both the device and the driver.
The creator unlinks it when it stops; teardown sweeps the lab's prefix after a
crash (``nic_emulators.config.lab_shm_files``).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from nic_emulators.config import SHM_DIR


class SharedRegion:
    """A named, mapped shared-memory file; ``view`` is its writable memoryview."""

    def __init__(self, name: str, size: int, *, create: bool) -> None:
        self.name = name
        self.path = SHM_DIR / name
        self.owner = create
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        if create:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a stale file from a killed run of the same lab
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self.size = size
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.view = memoryview(self._map)

    @classmethod
    def create(cls, name: str, size: int) -> SharedRegion:
        return cls(name, size, create=True)

    @classmethod
    def open(cls, name: str) -> SharedRegion:
        return cls(name, 0, create=False)

    def close(self) -> None:
        """Unmap (and unlink, if this process created it)."""
        self.view.release()
        with contextlib.suppress(BufferError):
            self._map.close()
        if self.owner:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @staticmethod
    def exists(name: str) -> bool:
        return (SHM_DIR / name).exists()


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
