"""A user-space impairment forwarder for the traffic tests (netem is not available here).

Runs in the middle namespace of a chain ``a <-> f <-> b`` and bridges its two
veths in both directions with AF_PACKET sockets. Frames that carry our stamp
(``wire.read_stamp``) can be dropped, duplicated, held back (reordered) or
corrupted by seq; a blackout drops *every* frame for a time window that opens
with the arrival of a given seq. Every other frame is forwarded exactly once.

The forwarder measures what it did with the kernel's rx timestamps
(SO_TIMESTAMPNS, the same clock as the checker's ring stamps), so a test can
compare the checker's longest gap with the window the forwarder really made.

Prints ``READY`` once both sockets are bound; on SIGTERM/SIGINT prints one JSON
line (see ``Forwarder.report``) and exits 0.

    python -m tests.traffic.forwarder --left fa --right fb --drop 5,6 --blackout 3000:50
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from bench.traffic import wire

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
RCVBUF = 16 << 20
_TIMESPEC = struct.Struct("@qq")


def payload_offset(frame: bytes) -> int:
    """Where the stamp would be: after Ethernet (+802.1Q) / IPv4 or IPv6 / UDP or ICMP."""
    base = 14
    etype = int.from_bytes(frame[12:14], "big")
    if etype in (0x8100, 0x88A8) and len(frame) > 18:
        etype = int.from_bytes(frame[16:18], "big")
        base += 4
    if etype == 0x0800 and len(frame) > base:
        return base + (frame[base] & 15) * 4 + 8
    if etype == 0x86DD:
        return base + 40 + 8
    return -1


@dataclass
class Blackout:
    """Drop everything from the arrival of ``seq`` for ``duration_ns``."""

    seq: int
    duration_ns: int
    start_ns: int | None = None
    dropped: int = 0
    dropped_ours: int = 0
    last_before: tuple[int, int] | None = None  # (rx_ns, seq) of our last frame forwarded
    first_after: tuple[int, int] | None = None

    def report(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "duration_ms": self.duration_ns / 1e6,
            "start_ns": self.start_ns,
            "dropped": self.dropped,
            "dropped_ours": self.dropped_ours,
            "last_before_rx_ns": self.last_before[0] if self.last_before else None,
            "last_before_seq": self.last_before[1] if self.last_before else None,
            "first_after_rx_ns": self.first_after[0] if self.first_after else None,
            "first_after_seq": self.first_after[1] if self.first_after else None,
        }


@dataclass
class Impairments:
    drop: set[int] = field(default_factory=set)
    duplicate: set[int] = field(default_factory=set)
    corrupt: set[int] = field(default_factory=set)
    hold: dict[int, int] = field(default_factory=dict)  # seq held -> seq it follows
    blackout: Blackout | None = None
    flow: int | None = None


class Forwarder:
    def __init__(self, left: str, right: str, impair: Impairments) -> None:
        self.impair = impair
        self.sockets = [self._open(left), self._open(right)]
        self.names = [f"{left}->{right}", f"{right}->{left}"]
        self.forwarded = [0, 0]
        self.foreign = [0, 0]
        self.dropped: list[int] = []
        self.duplicated: list[int] = []
        self.corrupted: list[int] = []
        self.reordered: list[list[int]] = []
        self.held: dict[int, bytes] = {}  # seq it follows -> held frame
        self.send_retries = 0
        self.stop = False

    @staticmethod
    def _open(iface: str) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((iface, ETH_P_ALL))
        sock.setblocking(False)
        return sock

    def run(self) -> None:
        poller = select.poll()
        for sock in self.sockets:
            poller.register(sock.fileno(), select.POLLIN)
        by_fd = {sock.fileno(): i for i, sock in enumerate(self.sockets)}
        while not self.stop:
            for fd, _ in poller.poll(50):
                side = by_fd[fd]
                self._drain(self.sockets[side], self.sockets[1 - side], side)

    def _drain(self, rx: socket.socket, tx: socket.socket, side: int) -> None:
        while True:
            try:
                frame, anc, _, addr = rx.recvmsg(65536, 64)
            except BlockingIOError:
                return
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            rx_ns = time.time_ns()
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(data[: _TIMESPEC.size])
                    rx_ns = sec * 1_000_000_000 + nsec
            self._handle(frame, rx_ns, tx, side)

    def _handle(self, frame: bytes, rx_ns: int, tx: socket.socket, side: int) -> None:
        imp = self.impair
        at = payload_offset(frame)
        stamp = wire.read_stamp(frame, at) if at >= 0 else None
        if stamp is not None and imp.flow is not None and stamp.flow != imp.flow:
            stamp = None
        black = imp.blackout
        if black is not None:
            if black.start_ns is None and stamp is not None and stamp.seq == black.seq:
                black.start_ns = rx_ns
            if black.start_ns is not None and rx_ns < black.start_ns + black.duration_ns:
                black.dropped += 1
                black.dropped_ours += stamp is not None
                return
        if stamp is None:
            self.foreign[side] += 1
            self._send(tx, frame, side)
            return
        seq = stamp.seq
        if seq in imp.drop:
            self.dropped.append(seq)
            return
        if seq in imp.hold:
            self.held[imp.hold[seq]] = frame
            return
        if seq in imp.corrupt:
            damaged = bytearray(frame)
            damaged[at + wire.SEQ_OFFSET + 8] ^= 0xFF  # a byte of tx_ns: the crc no longer matches
            frame = bytes(damaged)
            self.corrupted.append(seq)
        self._send(tx, frame, side)
        if black is not None:  # the frames that bound the window, as the forwarder saw them
            if black.start_ns is None:
                black.last_before = (rx_ns, seq)
            elif black.first_after is None:
                black.first_after = (rx_ns, seq)
        if seq in imp.duplicate:
            self._send(tx, frame, side)
            self.duplicated.append(seq)
        if seq in self.held:
            held = self.held.pop(seq)
            self._send(tx, held, side)
            self.reordered.append([seq_of(held), seq])

    def _send(self, tx: socket.socket, frame: bytes, side: int) -> None:
        while True:
            try:
                tx.send(frame)
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                self.send_retries += 1
                time.sleep(0.0001)
                continue
            self.forwarded[side] += 1
            return

    def report(self) -> dict[str, Any]:
        drops = 0
        for sock in self.sockets:
            raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            drops += struct.unpack("=II", raw)[1]
        return {
            "forwarded": dict(zip(self.names, self.forwarded, strict=True)),
            "foreign": dict(zip(self.names, self.foreign, strict=True)),
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "corrupted": self.corrupted,
            "reordered": self.reordered,
            "still_held": sorted(seq_of(f) for f in self.held.values()),
            "blackout": self.impair.blackout.report() if self.impair.blackout else None,
            "socket_drops": drops,
            "send_retries": self.send_retries,
        }


def seq_of(frame: bytes) -> int:
    stamp = wire.read_stamp(frame, payload_offset(frame))
    return stamp.seq if stamp else -1


def _seqs(text: str) -> set[int]:
    return {int(part) for part in text.split(",") if part}


def _pairs(text: str) -> dict[int, int]:
    held: dict[int, int] = {}
    for part in text.split(","):
        first, after = (int(x) for x in part.split(":"))
        if after <= first:
            raise argparse.ArgumentTypeError(f"--reorder {part}: hold X until after Y needs Y > X")
        held[first] = after
    return held


def _blackout(text: str) -> Blackout:
    seq, ms = text.split(":")
    return Blackout(int(seq), int(float(ms) * 1e6))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--left", required=True, help="one veth")
    ap.add_argument("--right", required=True, help="the other veth")
    ap.add_argument("--flow", type=int, help="impair only this flow (default: all of ours)")
    ap.add_argument("--drop", type=_seqs, default=set(), help="seqs to drop: 5,6,7")
    ap.add_argument("--dup", type=_seqs, default=set(), help="seqs to forward twice")
    ap.add_argument("--corrupt", type=_seqs, default=set(), help="seqs to damage (crc fails)")
    ap.add_argument("--reorder", type=_pairs, default={}, help="X:Y,...: hold X until after Y")
    ap.add_argument("--blackout", type=_blackout, help="S:MS: drop all for MS ms from seq S")
    args = ap.parse_args(argv)
    impair = Impairments(args.drop, args.dup, args.corrupt, args.reorder, args.blackout, args.flow)
    fwd = Forwarder(args.left, args.right, impair)

    def stop(signum: int, frame: FrameType | None) -> None:
        fwd.stop = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY", flush=True)
    fwd.run()
    print(json.dumps(fwd.report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
