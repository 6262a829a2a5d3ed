"""A ``newc`` cpio archive writer: the initramfs format the Linux kernel unpacks.

Written here rather than run through ``cpio`` so the image build needs no tool the
bench does not install, and so every member's owner, mode and time are fixed (root,
epoch 0): the same inputs give the same archive byte for byte.
"""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    """One member: a directory, a regular file (``data``) or a symlink (``target``)."""

    path: str
    mode: int
    data: bytes = b""
    target: str = ""


def _header(ino: int, mode: int, size: int, name: bytes, nlink: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(f"{f:08X}".encode() for f in fields)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def write_newc(entries: list[CpioEntry]) -> bytes:
    """The archive of ``entries``, in the order given (directories before their contents)."""
    out = io.BytesIO()
    for ino, entry in enumerate([*entries, CpioEntry(_TRAILER, 0)], start=1):
        name = entry.path.lstrip("/").encode() or b"."
        body = entry.target.encode() if stat.S_ISLNK(entry.mode) else entry.data
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        header = _header(ino if entry.path != _TRAILER else 0, entry.mode, len(body), name, nlink)
        out.write(header + name + b"\0")
        out.write(_pad(len(header) + len(name) + 1))
        out.write(body + _pad(len(body)))
    return out.getvalue()


def write_initramfs(entries: list[CpioEntry]) -> bytes:
    """``entries`` as a gzip-compressed newc archive (mtime 0: reproducible)."""
    return gzip.compress(write_newc(entries), compresslevel=6, mtime=0)
