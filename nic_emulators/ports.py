"""The NIC's two kinds of outside ports: the wire (an AF_PACKET socket) and the PF port.

The wire is the host interface the NIC is cabled through (``NicConfig.uplink``):
the NIC takes every frame arriving there (promiscuous, its own transmissions
ignored) and transmits on it. The PF port is a datagram socket in the NIC's
run directory through which the hypervisor's emulated devices (vmxnet3
backends) send and receive their guests' frames, one vport per guest.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_IGNORE_OUTGOING = 23
MAX_FRAME = 65536 + 64
BATCH = 256


class WirePort:
    """AF_PACKET on the NIC's uplink interface, promiscuous, deaf to its own transmissions."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.sock.bind((interface, 0))
            index = socket.if_nametoindex(interface)
            mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
            self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.tx_errors = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> Iterator[bytes]:
        recv = self.sock.recv
        for _ in range(BATCH):
            try:
                yield recv(MAX_FRAME)
            except BlockingIOError:
                return

    def send(self, frame: bytes) -> None:
        try:
            self.sock.send(frame)
        except (BlockingIOError, OSError):
            self.tx_errors += 1

    def close(self) -> None:
        self.sock.close()


#: Datagrams a UNIX socket queues; the kernel's default (10) drops any burst.
DGRAM_QUEUE = 4096


def deepen_datagram_queues() -> None:
    """Raise this network namespace's UNIX datagram queue length (read at socket creation)."""
    knob = Path("/proc/sys/net/unix/max_dgram_qlen")
    with contextlib.suppress(OSError):
        if int(knob.read_text()) < DGRAM_QUEUE:
            knob.write_text(str(DGRAM_QUEUE))


class PfPort:
    """Datagram socket at ``path``; each peer address (a vmxnet3 backend's socket) is a vport."""

    def __init__(self, path: Path) -> None:
        self.path = path
        deepen_datagram_queues()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.setblocking(False)
        self.tx_errors = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> Iterator[tuple[bytes, str]]:
        recvfrom = self.sock.recvfrom
        for _ in range(BATCH):
            try:
                frame, peer = recvfrom(MAX_FRAME)
            except BlockingIOError:
                return
            yield frame, peer

    def send(self, frame: bytes, peer: str) -> None:
        try:
            self.sock.sendto(frame, peer)
        except OSError:  # the backend is gone or its queue is full: a drop, as on a wire
            self.tx_errors += 1

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
