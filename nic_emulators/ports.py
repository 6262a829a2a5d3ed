"""The NIC's two kinds of outside ports: the wire (an AF_PACKET socket) and the PF port.

The wire is the host interface the NIC is cabled through (``NicConfig.uplink``):
the NIC takes every frame arriving there (promiscuous, its own transmissions
ignored) and transmits on it. The PF port is a datagram socket in the NIC's
run directory through which the hypervisor's emulated devices (vmxnet3
backends) send and receive their guests' frames, one vport per guest.
"""

from __future__ import annotations

import contextlib
import mmap
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

from nic_emulators.send_batch import SendBatch
from nic_emulators.wire_checksum import complete_checksum

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
#: The sender left the L4 checksum to hardware (see ``wire_checksum``).
TP_STATUS_CSUMNOTREADY = 0x8
MAX_FRAME = 65536 + 64
BATCH = 256
#: The receive ring: 32 MiB of 4 KiB slots (8192 frames, ~80 ms at 100 kpps; longer frames
#: are counted as truncated).
SLOT = 4096
RING_BLOCK = 1 << 20
RING_BLOCKS = 32
#: tpacket2_hdr: status, len, snaplen, mac offset, (net offset, sec, nsec), vlan tci, vlan tpid.
_TP2 = struct.Struct("=IIIH10xHH")


class WirePort:
    """AF_PACKET on the NIC's uplink interface: promiscuous, deaf to its own transmissions.

    Receptions come through a PACKET_MMAP ring (TPACKET_V2: one slot per frame,
    handed over at once, so no added latency), read without a system call per
    frame — as a NIC's DMA fills descriptors without asking the host. A VLAN
    tag the kernel took off into the slot header is put back into the frame.
    Transmissions go a batch at a time, one ``sendmmsg`` per batch (``send_batch``).
    """

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # nothing until bind
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            request = struct.pack(
                "=4I", RING_BLOCK, RING_BLOCKS, SLOT, RING_BLOCK * RING_BLOCKS // SLOT
            )
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
            self.map = mmap.mmap(self.sock.fileno(), RING_BLOCK * RING_BLOCKS)
            self.sock.bind((interface, ETH_P_ALL))
            index = socket.if_nametoindex(interface)
            mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
            self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)
        self.batch = SendBatch(self.sock)
        self.ring = memoryview(self.map)
        self.status_words = self.ring.cast("I")
        self.slots = RING_BLOCK * RING_BLOCKS // SLOT
        self.next_slot = 0
        self.tx_errors = 0
        self.truncated = 0
        self.dropped = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[bytes]:
        """Up to ``BATCH`` frames from the receive ring, oldest first; their slots go back."""
        ring, slots, unpack = self.ring, self.slots, _TP2.unpack_from
        status_words = self.status_words
        frames: list[bytes] = []
        slot = self.next_slot
        for _ in range(BATCH):
            base = slot * SLOT
            status, length, snaplen, mac, tci, tpid = unpack(ring, base)
            if not status & TP_STATUS_USER:
                break
            if snaplen < length:
                self.truncated += 1
                frame = b""
            elif status & TP_STATUS_VLAN_VALID:
                start = base + mac
                frame = bytes(ring[start : start + 12]) + (tpid or 0x8100).to_bytes(2, "big")
                frame += tci.to_bytes(2, "big") + bytes(ring[start + 12 : start + snaplen])
            else:
                frame = ring[base + mac : base + mac + snaplen].tobytes()
            if status & TP_STATUS_CSUMNOTREADY and frame:
                frame = complete_checksum(frame)
            status_words[base >> 2] = 0  # TP_STATUS_KERNEL: the slot goes back
            slot += 1
            if slot == slots:
                slot = 0
            if frame:
                frames.append(frame)
        self.next_slot = slot
        return frames

    def send(self, frame: bytes) -> None:
        """Transmit one frame; one the kernel refuses is dropped and counted in ``tx_errors``."""
        try:
            self.sock.send(frame)
        except OSError:
            self.tx_errors += 1

    def send_many(self, frames: list[bytes]) -> None:
        """Transmit ``frames`` in order, a sendmmsg per batch (``send_batch``); what the
        kernel refuses is dropped and counted in ``tx_errors``."""
        self.tx_errors += self.batch.send(frames)

    def ring_drops(self) -> int:
        """Frames the kernel dropped because the receive ring was full (since the last call)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        self.dropped += struct.unpack("=II", raw)[1]
        return self.dropped

    def close(self) -> None:
        self.batch.close()
        self.status_words.release()
        self.ring.release()
        self.map.close()
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
        path.chmod(0o600)
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

    def pending(self) -> bool:
        """Whether a datagram waits to be received."""
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        return True

    def send(self, frame: bytes, peer: str) -> None:
        try:
            self.sock.sendto(frame, peer)
        except OSError:  # the backend is gone or its queue is full: a drop, as on a wire
            self.tx_errors += 1

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
