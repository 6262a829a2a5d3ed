"""The guest's netdev: a TAP in the guest's namespace, attached to by name.

The bench creates the TAP (persistent, with the guest's MAC and IP) when it
makes the guest, so the netdev, its MAC and IP survive anything the shell does;
the shell only attaches to it as its one queue.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

TUNSETIFF = 0x400454CA
SIOCSIFTXQLEN = 0x8943
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
#: The guest netdev's transmit queue, in frames. A TAP does not push back on the guest:
#: a frame sent while its queue is full is dropped (``tx_dropped``). The process reading
#: it is one of many on the host, which may not run it for milliseconds, so the queue
#: covers such a stall at full rate (10,000 frames: 55 ms at 180,000 frames/s), where
#: the kernel's default of 1000 covers 5 ms. Measured on the 2-core dev VM (RFC 2544,
#: passthrough guest->generator, 0.1% loss): 135,000-150,000 frames/s with 1000,
#: 179,000 with 10,000, the same in two runs.
TX_QUEUE_LEN = 10_000


def open_tap(name: str, queue_len: int = TX_QUEUE_LEN) -> int:
    """A non-blocking fd on TAP ``name`` (which must exist in this namespace), its
    transmit queue set to ``queue_len`` frames."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock, SIOCSIFTXQLEN, struct.pack("16si", name.encode(), queue_len))
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
