"""The guest's netdev: a TAP in the guest's namespace, attached to by name.

The bench creates the TAP (persistent, with the guest's MAC and IP) when it
makes the guest, so the netdev, its MAC and IP survive anything the shell does;
the shell only attaches to it as its one queue.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name: str) -> int:
    """A non-blocking fd on TAP ``name`` (which must exist in this namespace)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def tap_mtu(name: str) -> int:
    """The MTU of interface ``name`` in this namespace (1500 if it cannot be read)."""
    try:
        return int(Path(f"/sys/class/net/{name}/mtu").read_text())
    except (OSError, ValueError):
        return 1500
