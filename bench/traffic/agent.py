"""The on-host traffic agent: a sequenced generator (``send``) and an exact checker (``recv``).

Standard library only, one file (plus ``wire.py`` next to it): the controller
copies both to a lab host and runs ``python3 agent.py MODE ...`` there over
SSH. That is why this module is longer than the house ~400 lines: it cannot
import helpers from the bench.

Send path: ``sendmmsg`` through ctypes on an AF_PACKET socket. A fixed array
of ``--batch`` frame buffers, iovecs and mmsghdrs is set up once; each frame is
stamped in place (``wire.stamp``, ~1.9 us a frame: the Python stamping is the
sender's main cost) and one ``sendmmsg`` hands the batch to the kernel. Short
sends and ENOBUFS/EAGAIN (a veth refuses a frame when its peer's backlog is
full) are retried from the first refused frame, so ``sent`` is exactly what the
kernel accepted. A PACKET_TX_RING prototype with the same stamping was slower
(sender alone, 72-byte frames: sendmmsg 213,000-253,000 pps, TX ring
154,000-188,000 pps: copying each frame into the ring and writing its status
from Python costs more than the per-batch call it saves), and a TX ring
reports a refused frame by consuming it, which makes exact ``sent`` harder.

Receive path: a PACKET_MMAP TPACKET_V3 ring (blocks of 256 KiB, retired after
at most 32 ms). V3 packs frames by their size (~190 bytes of ring per small
frame: a 64 MiB ring buffers ~350,000 frames) and hands over a block at a
time, so the hot loop pays nothing per frame for slot ownership (with V2,
reading and releasing each slot's status costs ~0.4 us a frame in Python,
measured) and the kernel wakes the checker once per block. A one-instruction
classic BPF filter truncates the copy to 256 bytes (headers + stamp). The hot
loop decodes an untagged IPv4 frame with two ``struct.unpack_from`` calls on a
memoryview of the ring (802.1Q, IPv6 and IP options take a slower path), keeps
the current flow's state in locals and a bytearray of seen seqs, and the
garbage collector is off (the loops make no cycles).

UDP sink (``--udp-sink PORT``): the checker also binds a UDP socket on the stream's
destination port, with the smallest receive buffer, and never reads it. The packet
socket sees every frame before the host's IP stack does; without the sink that stack
answers each frame with an ICMP port unreachable: about 1.3 us of CPU a frame
(measured: AF_PACKET sends into a veth whose peer namespace has the stream's
address, 4.8-6.0 against 4.0-4.6 us a send with the sink) spent inline in whoever
transmitted into the checker's interface (on the emulated lab, the NIC emulator's
wire send), and up to ``icmp_ratelimit`` replies a second sent back through the
device under test. With the sink the stack drops each frame at the full socket.

Measured on the 2-core dev VM, sender and checker at once, each in its own
network namespace on one veth pair, 10^6 frames a run, exact accounting
meaning ``sent == unique`` and 0 ring drops:

* ``--max-rate``, 72-byte UDP frames: 212,000-218,000 pps, exact (3 runs;
  runs while other work shared the VM gave 138,000-192,000, still exact);
  128-byte frames 202,000, 512 and 1500-byte frames 183,000 pps, exact;
* paced ``--pps 150000``, ``180000``, ``200000``: all on schedule and exact;
* the sender is the limit: the checker alone drains a pre-filled ring at
  ~400,000-600,000 pps (~1.7-2.5 us a frame), the sender alone reaches
  ~250,000 pps.

Latency includes the batching: frames of a batch are stamped one after the
other and handed over together, so at ``--max-rate`` (64 a batch) even the
fastest frame shows ~90 us on a veth; a paced run at 10,000 pps (10 a batch)
shows ~25 us. Use ``--batch`` to trade rate for latency resolution.

JSON printed by ``send`` (one line)::

    {"mode": "send", "flow": F, "sent": N, "first_tx_ns": int|null,
     "last_tx_ns": int|null, "elapsed_s": float, "pps": float}

JSON printed by ``recv`` (one line)::

    {"mode": "recv", "flows": {"<flow>": FLOW, ...}, "foreign": N,
     "ring_drops": N, "ring_freezes": N}

    FLOW = {
      "received": N,          # intact frames, duplicates included (unique + duplicates)
      "unique": N, "duplicates": N,
      "reordered": N,         # first arrivals whose seq is below the highest seen before
      "corrupt": N,           # crc mismatch (or seq >= 2**28): counted, not believed
      "first_seq": int|null,  # seq of the first arrival
      "max_seq": int|null,
      "missing": [[a, b], ...],   # seqs in [0, max_seq] never received, inclusive ranges
      "missing_total": N, "missing_truncated": bool,  # the list stops at 1000 ranges
      "missing_ends": [[seq, rx_ns, tx_ns]|null, ...],  # per range: the arrival that jumped it
      "longest_gap_ns": N,    # longest time between consecutive arrivals
      "gap_end_ns": int|null, # rx time of the arrival that ended it
      "gaps": [[end_ns, gap_ns, sent_ns, seq_step], ...],  # every gap over --gaps-over MS,
                              # in arrival order: sent_ns apart at the sender, seqs apart
      "gaps_truncated": bool, # the list stops at 10,000 gaps
      "gap_seq_before": int|null, "gap_seq_after": int|null,
      "latency_ns": {"min": N, "p50": N, "p99": N, "max": N} | null,
      "first_rx_ns": int|null, "last_rx_ns": int|null,
      "timeline": {"start_ns": int|null, "bucket_ms": 1, "counts": [N, ...]}
    }

Latency is ``rx_ns - tx_ns`` of first arrivals (kernel rx stamp minus the
sender's ``time.time_ns()``); percentiles are nearest-rank over all of them.
The timeline is a plain list: ``counts[i]`` arrivals (duplicates included)
with ``start_ns + i ms <= rx < start_ns + (i+1) ms``. Corrupt frames are
attributed to the flow id they claim when that flow is reported, else foreign.
"""

from __future__ import annotations

import argparse
import array
import bisect
import contextlib
import ctypes
import errno
import gc
import json
import math
import mmap
import os
import select
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

try:
    from bench.traffic import wire
except ImportError:  # run as a script on a lab host, next to wire.py
    import wire  # type: ignore[no-redef, import-not-found]

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26

BLOCK_SIZE = 1 << 18
RETIRE_TOV_MS = 32
SNAP_LEN = 256
#: Seqs at or above this are not tracked (the seen map would not fit): counted as corrupt.
MAX_TRACKED_SEQ = 1 << 28
MISSING_RANGES_CAP = 1000
#: Gaps over ``--gaps-over`` a flow reports at most: a slow spell of a shared machine
#: makes more than a thousand sub-millisecond gaps in seconds of 10 kpps.
GAPS_CAP = 10_000
POLL_MS = 50

MAGIC_INT = int.from_bytes(wire.MAGIC, "big")

# tpacket3_hdr: next_offset, sec, nsec, snaplen, (len, status), mac, (net, hv1, pad,
# sockaddr_ll family/protocol/ifindex/hatype), sll_pkttype at 48 + 10.
_TP3 = struct.Struct("<IIII8xH32xB")
_BLOCK = struct.Struct("<II")  # num_pkts, offset_to_first_pkt (at 12 in the block)
# Ethernet type, IPv4 version/IHL, IPv4 protocol.
_L2L3 = struct.Struct(">12xHB8xB")
# The stamp: magic as an int, version, (flags), flow, seq, tx_ns, check.
_STAMP = struct.Struct(">IBxHQQI")
# Untagged IPv4 without options, UDP or ICMP: type, vihl, protocol, ICMP type and the
# stamp (at 42) in one go.
_FAST4 = struct.Struct(">12xHB8xB10xB7xIBxHQQI")
_STATS_V3 = struct.Struct("=III")  # tp_packets, tp_drops, tp_freeze_q_cnt


class Stop:
    """Set by SIGTERM/SIGINT; the loops look at it between batches/blocks."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            cls.requested = True

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def emit(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def ready() -> None:
    sys.stdout.write("READY\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- send


class IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint))


_RETRY_ERRNOS = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.EINTR})


class FrameBatch:
    """``size`` copies of a frame, wired once into an mmsghdr array for sendmmsg."""

    def __init__(self, fd: int, template: bytes, size: int) -> None:
        self.fd = fd
        self.frames = [bytearray(template) for _ in range(size)]
        # Views exported from the bytearrays pin them: their addresses never move.
        self._views = [(ctypes.c_char * len(template)).from_buffer(f) for f in self.frames]
        self._iovs = (IoVec * size)()
        self._msgs = (MMsgHdr * size)()
        for i, view in enumerate(self._views):
            self._iovs[i].iov_base = ctypes.addressof(view)
            self._iovs[i].iov_len = len(template)
            self._msgs[i].msg_hdr.msg_iov = ctypes.pointer(self._iovs[i])
            self._msgs[i].msg_hdr.msg_iovlen = 1
        libc = ctypes.CDLL(None, use_errno=True)
        self._sendmmsg = libc.sendmmsg
        self._sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        self._sendmmsg.restype = ctypes.c_int
        self._base = ctypes.addressof(self._msgs)
        self._stride = ctypes.sizeof(MMsgHdr)
        self.retries = 0

    def send(self, count: int) -> int:
        """Hand frames 0..count-1 to the kernel; returns how many it accepted.

        Fewer than ``count`` only if a stop was requested while the kernel kept
        refusing; refused frames are retried, never counted.
        """
        done = 0
        call, fd, base, stride = self._sendmmsg, self.fd, self._base, self._stride
        while done < count:
            n = call(fd, base + done * stride, count - done, 0)
            if n > 0:
                done += n
                continue
            err = ctypes.get_errno()
            if err not in _RETRY_ERRNOS:
                raise OSError(err, f"sendmmsg: {os.strerror(err)}")
            self.retries += 1
            if Stop.requested:
                break
            time.sleep(0.00005)
        return done


@dataclass(frozen=True)
class SendPlan:
    iface: str
    frame: bytes
    payload_at: int
    flow: int
    pps: float | None  # None: as fast as possible
    count: int | None
    duration_s: float | None
    batch: int
    #: Wall-clock second (this host's clock) to start sending at; None: at once.
    start_at: float | None = None


#: How far ahead ``--start-at`` may be: further is a clock or a unit mistake.
START_AT_LIMIT_S = 600.0


def send_plan(args: argparse.Namespace) -> SendPlan:
    try:
        frame = bytes.fromhex(args.frame_hex)
    except ValueError as exc:
        raise SystemExit(f"agent send: --frame-hex is not hex: {exc}") from exc
    at = args.payload_at
    if at < 0 or at + wire.HEADER_LEN > len(frame):
        raise SystemExit(
            f"agent send: --payload-at {at} leaves no room for the {wire.HEADER_LEN}-byte "
            f"stamp in a {len(frame)}-byte frame"
        )
    found = wire.read_stamp(frame, at)
    if found is None:
        raise SystemExit(f"agent send: no {wire.MAGIC!r} payload at byte {at} of the frame")
    if found.flow != args.flow:
        raise SystemExit(
            f"agent send: the frame carries flow {found.flow}, --flow says {args.flow} "
            "(the flow id is outside the checksum-compensated bytes; build the frame for it)"
        )
    if args.pps is not None and not args.pps > 0:
        raise SystemExit("agent send: --pps must be > 0")
    if args.batch < 1:
        raise SystemExit("agent send: --batch must be >= 1")
    if args.start_at is not None and args.start_at - time.time() > START_AT_LIMIT_S:
        raise SystemExit(
            f"agent send: --start-at {args.start_at:.3f} is {args.start_at - time.time():.0f} s "
            f"ahead of this host's clock (at most {START_AT_LIMIT_S:.0f} s; seconds since "
            "the epoch, as `date +%s.%N` prints)"
        )
    return SendPlan(
        args.iface,
        frame,
        at,
        args.flow,
        args.pps,
        args.count,
        args.duration,
        args.batch,
        args.start_at,
    )


def _wait_until(wall_s: float) -> None:
    """Sleep until this host's clock reads ``wall_s`` (or a stop is asked for)."""
    while not Stop.requested and (wait := wall_s - time.time()) > 0:
        time.sleep(min(wait, 0.05))


def run_send(plan: SendPlan) -> dict[str, Any]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    sock.bind((plan.iface, 0))
    paced = plan.pps is not None
    per_batch = plan.batch
    if plan.pps is not None:  # at most ~1 ms of frames per batch, so pacing stays smooth
        per_batch = max(1, min(plan.batch, int(plan.pps // 1000)))
    batch = FrameBatch(sock.fileno(), plan.frame, per_batch)
    target = wire.words_sum(plan.frame, plan.payload_at)
    head = wire.head_crc(plan.frame, plan.payload_at)
    limit = plan.count
    if limit is None and plan.pps is not None and plan.duration_s is not None:
        limit = math.ceil(plan.pps * plan.duration_s)  # the frames due within the duration
    ready()
    if plan.start_at is not None:
        _wait_until(plan.start_at)

    stamp, time_ns, monotonic_ns, frames, at = (
        wire.stamp,
        time.time_ns,
        time.monotonic_ns,
        batch.frames,
        plan.payload_at,
    )
    ns_per_frame = 1e9 / plan.pps if plan.pps is not None else 0.0
    start = monotonic_ns()
    end = start + int(plan.duration_s * 1e9) if plan.duration_s is not None else None
    seq = 0
    last_index = -1
    first_tx: int | None = None
    while not Stop.requested:
        n = per_batch if limit is None else min(per_batch, limit - seq)
        if n <= 0:
            break
        if paced:
            due = start + int(seq * ns_per_frame)
            while not Stop.requested and (wait := due - monotonic_ns()) > 0:
                time.sleep(min(wait, 50_000_000) / 1e9)
        elif end is not None and monotonic_ns() >= end:
            break
        if Stop.requested:
            break
        # zip stops after n frames (the last batch may be short).
        for frame, frame_seq in zip(frames, range(seq, seq + n), strict=False):
            stamp(frame, at, frame_seq, time_ns(), target, head)
        accepted = batch.send(n)
        if accepted:
            if first_tx is None:
                first_tx = _tx_ns_of(frames[0], at)
            last_index = accepted - 1
        seq += accepted
    elapsed = (monotonic_ns() - start) / 1e9
    sock.close()
    return {
        "mode": "send",
        "flow": plan.flow,
        "sent": seq,
        "first_tx_ns": first_tx,
        "last_tx_ns": _tx_ns_of(frames[last_index], at) if last_index >= 0 else None,
        "elapsed_s": round(elapsed, 6),
        "pps": round(seq / elapsed, 1) if elapsed > 0 else 0.0,
    }


def _tx_ns_of(frame: bytearray, payload_at: int) -> int:
    tx: int = struct.unpack_from(">Q", frame, payload_at + wire.SEQ_OFFSET + 8)[0]
    return tx


# ---------------------------------------------------------------- recv


class FlowStats:
    """One flow's counters; the hot loop keeps the scalars in locals and stores them here."""

    __slots__ = (
        "corrupt",
        "dup",
        "first_rx",
        "first_seq",
        "flow",
        "gap_after",
        "gap_before",
        "gap_end",
        "gaps",
        "last_rx",
        "last_seq",
        "last_tx",
        "latencies",
        "max_gap",
        "max_seq",
        "reord",
        "run_ends",
        "seen",
        "timeline",
    )

    def __init__(self, flow: int) -> None:
        self.flow = flow
        self.seen = bytearray(1 << 16)
        self.latencies = array.array("q")
        self.timeline: list[int] = [0] * 1024
        self.first_rx = 0
        self.first_seq = -1
        self.last_rx = 0
        self.last_tx = 0
        self.last_seq = -1
        self.max_seq = -1
        self.dup = 0
        self.reord = 0
        self.corrupt = 0
        self.max_gap = 0
        self.gap_end = 0
        self.gap_before = -1
        self.gap_after = -1
        #: Every gap over the floor: (rx time of the arrival that ended it, its length,
        #: the time between the two frames' send stamps, their seq step).
        self.gaps: list[tuple[int, int, int, int]] = []
        #: Each arrival that jumped over seqs not seen yet, by its seq: (its rx time, the
        #: highest seq before it, its tx stamp). The seqs it jumped were sent just before
        #: it. Capped like the missing list; jumps that later arrivals filled make room
        #: (``_make_room``).
        self.run_ends: dict[int, tuple[int, int, int]] = {}

    def report(self) -> dict[str, Any]:
        seen, top = self.seen, self.max_seq
        unique = seen.count(1)
        missing, total, truncated = _missing_ranges(seen, top)
        lat = sorted(self.latencies)
        arrived = self.first_seq >= 0
        timeline = self.timeline[:]
        while timeline and timeline[-1] == 0:
            timeline.pop()
        return {
            "received": unique + self.dup,
            "unique": unique,
            "duplicates": self.dup,
            "reordered": self.reord,
            "corrupt": self.corrupt,
            "first_seq": self.first_seq if arrived else None,
            "max_seq": top if arrived else None,
            "missing": missing,
            "missing_total": total,
            "missing_truncated": truncated,
            "missing_ends": _run_ends(missing, self.run_ends),
            "longest_gap_ns": self.max_gap,
            "gap_end_ns": self.gap_end or None,
            "gap_seq_before": self.gap_before if self.gap_end else None,
            "gap_seq_after": self.gap_after if self.gap_end else None,
            "gaps": [list(gap) for gap in self.gaps[:GAPS_CAP]],
            "gaps_truncated": len(self.gaps) > GAPS_CAP,
            "latency_ns": (
                {
                    "min": lat[0],
                    "p50": _nearest_rank(lat, 50),
                    "p99": _nearest_rank(lat, 99),
                    "max": lat[-1],
                }
                if lat
                else None
            ),
            "first_rx_ns": self.first_rx if arrived else None,
            "last_rx_ns": self.last_rx if arrived else None,
            "timeline": {
                "start_ns": self.first_rx if arrived else None,
                "bucket_ms": 1,
                "counts": timeline,
            },
        }


_NO_FLOW = FlowStats(-1)  # the hot loop's "current flow" before the first frame of a block


def _nearest_rank(ordered: Sequence[int], percent: float) -> int:
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _run_ends(
    missing: list[list[int]], ends: dict[int, tuple[int, int, int]]
) -> list[list[int] | None]:
    """Per missing range, the first arrival after its end that jumped over it: its seq,
    rx time and tx stamp."""
    order = sorted(ends)
    found: list[list[int] | None] = []
    for _, hi in missing:
        at = bisect.bisect_left(order, hi + 1)
        if at < len(order):
            rx, _, tx = ends[order[at]]
            found.append([order[at], rx, tx])
        else:
            found.append(None)
    return found


def _make_room(ends: dict[int, tuple[int, int, int]], seen: bytearray) -> None:
    """Forget the jumps whose every skipped seq arrived later (reordered, not lost): they
    time no loss. Runs only when the record is full, off the per-frame path."""
    for seq, (_, before, _) in list(ends.items()):
        if seen.find(0, before + 1, seq) == -1:
            del ends[seq]


def _missing_ranges(seen: bytearray, top: int) -> tuple[list[list[int]], int, bool]:
    """Inclusive ranges of seqs in [0, top] whose byte in ``seen`` is 0 (C-speed scans)."""
    end = top + 1
    if end <= 0:
        return [], 0, False
    total = end - seen.count(1, 0, end)
    ranges: list[list[int]] = []
    pos = seen.find(0, 0, end)
    while pos != -1:
        if len(ranges) == MISSING_RANGES_CAP:
            return ranges, total, True
        stop = seen.find(1, pos, end)
        if stop == -1:
            stop = end
        ranges.append([pos, stop - 1])
        pos = seen.find(0, stop, end)
    return ranges, total, False


class RxRing:
    """An AF_PACKET socket on ``iface`` with a TPACKET_V3 RX ring mapped into memory."""

    def __init__(self, iface: str, ring_mb: int) -> None:
        self.block_nr = max(4, (ring_mb << 20) // BLOCK_SIZE)
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # nothing until bind
        sock = self.sock
        with contextlib.suppress(OSError):  # kernels before 4.20: pkttype is checked anyway
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        self._filter = _truncating_filter(SNAP_LEN)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, self._filter[0])
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        frame_size = 2048
        req = struct.pack(
            "=7I",
            BLOCK_SIZE,
            self.block_nr,
            frame_size,
            self.block_nr * (BLOCK_SIZE // frame_size),
            RETIRE_TOV_MS,
            0,
            0,
        )
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.map = mmap.mmap(
            sock.fileno(),
            BLOCK_SIZE * self.block_nr,
            mmap.MAP_SHARED,
            mmap.PROT_READ | mmap.PROT_WRITE,
        )
        sock.bind((iface, ETH_P_ALL))
        self.drops = 0
        self.freezes = 0

    def read_stats(self) -> None:
        """Add the kernel's counters (reading them resets them)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
        _, drops, freezes = _STATS_V3.unpack(raw)
        self.drops += drops
        self.freezes += freezes

    def close(self) -> None:
        self.map.close()
        self.sock.close()


def _truncating_filter(snap: int) -> tuple[bytes, Any]:
    """A one-instruction classic BPF program (``ret #snap``): copy at most ``snap`` bytes."""
    insn = (ctypes.c_uint8 * 8).from_buffer_copy(struct.pack("=HBBI", 0x06, 0, 0, snap))
    return struct.pack("@HP", 1, ctypes.addressof(insn)), insn


def _locate_payload(ring: memoryview, base: int, limit: int, echo_only: bool) -> int:
    """Offset of the stamp in a frame the fast path did not take (802.1Q, IPv6, IP options).

    -1 if the frame is not UDP or ICMP echo (only echo replies with ``echo_only``) or too
    short to hold a stamp.
    """
    etype, vihl, proto = _L2L3.unpack_from(ring, base)
    if etype in (0x8100, 0x88A8):  # a tag left in the data (not stripped by the kernel)
        base += 4
        if base + 24 > limit:
            return -1
        etype, vihl, proto = _L2L3.unpack_from(ring, base)
    l4: int
    if etype == 0x0800 and vihl >> 4 == 4:
        l4 = base + 14 + ((vihl & 15) << 2)
        icmp, reply, request = 1, 0, 8
    elif etype == 0x86DD:  # no extension headers
        l4 = base + 54
        proto = ring[base + 20]
        icmp, reply, request = 58, 129, 128
    else:
        return -1
    p = l4 + 8
    if p + wire.HEADER_LEN > limit:
        return -1
    if proto == 17:
        return -1 if echo_only else p
    if proto == icmp:
        kind = ring[l4]
        if kind == reply or (kind == request and not echo_only):
            return p
    return -1


@dataclass(frozen=True)
class RecvPlan:
    iface: str
    flows: frozenset[int] | None
    duration_s: float | None
    idle_exit_s: float | None
    ring_mb: int
    echo_replies_only: bool
    #: UDP ports to sink (``UdpSink``).
    udp_sink: tuple[int, ...] = ()
    #: Gaps longer than this are each reported (``gaps``); None: only the longest.
    gaps_over_ns: int | None = None


class Checker:
    """Counts our frames from the ring; ``run`` returns when a stop condition is met."""

    def __init__(self, plan: RecvPlan, ring: RxRing) -> None:
        self.plan = plan
        self.ring = ring
        self.flows: dict[int, FlowStats] = {}
        for flow in sorted(plan.flows or ()):
            self.flows[flow] = FlowStats(flow)
        self.corrupt_claims: dict[int, int] = {}
        self.foreign = 0
        self.block = 0

    def run(self) -> None:
        plan = self.plan
        poller = select.poll()
        poller.register(self.ring.sock.fileno(), select.POLLIN | select.POLLERR)
        monotonic = time.monotonic
        end = monotonic() + plan.duration_s if plan.duration_s is not None else math.inf
        idle = plan.idle_exit_s if plan.idle_exit_s is not None else math.inf
        last_activity = math.inf  # none of our frames yet: --idle-exit does not run
        marker = self.activity_marker()
        draining_until = math.inf
        while True:
            got = self.drain_block()
            now = monotonic()
            if (seen := self.activity_marker()) != marker:
                marker, last_activity = seen, now
            if draining_until == math.inf:
                if Stop.requested or now >= end or now - last_activity >= idle:
                    # Frames already in a half-filled block show up when it retires.
                    draining_until = now + 2 * RETIRE_TOV_MS / 1000 + 0.005
                elif not got:
                    timeout = min(end, last_activity + idle, now + POLL_MS / 1000) - now
                    poller.poll(max(1, math.ceil(timeout * 1000)))
            elif now >= draining_until:
                return
            elif not got:
                poller.poll(max(1, math.ceil((draining_until - now) * 1000)))

    def activity_marker(self) -> tuple[int, int]:
        """Changes whenever one of our frames arrived."""
        return (len(self.flows), sum(f.last_rx for f in self.flows.values()))

    def drain_block(self) -> bool:
        """Process the next block if the kernel handed it over; False if it has not."""
        ring = memoryview(self.ring.map)
        offset = self.block * BLOCK_SIZE
        if not ring[offset + 8] & TP_STATUS_USER:
            return False
        num, first = _BLOCK.unpack_from(ring, offset + 12)
        self._walk(ring, offset + first, num)
        struct.pack_into("<I", ring, offset + 8, TP_STATUS_KERNEL)
        self.block = (self.block + 1) % self.ring.block_nr
        return True

    def _new_flow(self, flow: int) -> FlowStats | None:
        if self.plan.flows is not None:
            return None
        stats = FlowStats(flow)
        self.flows[flow] = stats
        return stats

    def _walk(self, ring: memoryview, off: int, num: int) -> None:  # noqa: PLR0915
        """The hot loop: ``num`` frames from ``off``; every name it touches is a local."""
        unpack_tp, unpack_fast, unpack_stamp = (
            _TP3.unpack_from,
            _FAST4.unpack_from,
            _STAMP.unpack_from,
        )
        crc32 = zlib.crc32
        magic_int, version = MAGIC_INT, wire.VERSION
        echo_only = self.plan.echo_replies_only
        gap_floor = self.plan.gaps_over_ns or 1 << 62
        flows = self.flows
        foreign = 0
        # The current flow, in locals (stored back on a switch and at the end).
        cur = _NO_FLOW
        cur_flow = -1
        seen = bytearray()
        nseen = 0
        lat_append = array.array("q").append
        gaps: list[tuple[int, int, int, int]] = []
        tl: list[int] = []
        run_ends: dict[int, tuple[int, int, int]] = {}
        ntl = 0
        t0 = max_seq = last_rx = last_tx = last_seq = dup = reord = max_gap = 0
        for _ in range(num):
            nxt, sec, nsec, snap, mac, pkttype = unpack_tp(ring, off)
            base = off + mac
            off += nxt
            if pkttype == PACKET_OUTGOING:
                continue
            if snap < 72:  # Ethernet + IPv4 + UDP + stamp: anything shorter is not ours
                foreign += 1
                continue
            # Fast path: untagged IPv4 without options, payload at 42, one unpack.
            etype, vihl, proto, kind, magic, ver, flow, seq, tx, check = unpack_fast(ring, base)
            if etype == 0x0800 and vihl == 0x45:
                p = base + 42
                if proto == 17:
                    if echo_only:
                        foreign += 1
                        continue
                elif proto != 1 or (kind != 0 and (echo_only or kind != 8)):
                    foreign += 1
                    continue
            else:
                p = _locate_payload(ring, base, base + snap, echo_only)
                if p < 0:
                    foreign += 1
                    continue
                magic, ver, flow, seq, tx, check = unpack_stamp(ring, p)
            if magic != magic_int or ver != version:
                foreign += 1
                continue
            if crc32(ring[p : p + 24]) != check or seq >= MAX_TRACKED_SEQ:
                self.corrupt_claims[flow] = self.corrupt_claims.get(flow, 0) + 1
                continue
            rx = sec * 1_000_000_000 + nsec
            if flow != cur_flow:
                nxt_stats = flows.get(flow) or self._new_flow(flow)
                if nxt_stats is None:
                    foreign += 1
                    continue
                cur.max_seq, cur.last_rx, cur.last_seq = max_seq, last_rx, last_seq
                cur.dup, cur.reord, cur.max_gap, cur.last_tx = dup, reord, max_gap, last_tx
                cur, cur_flow = nxt_stats, flow
                if cur.first_seq < 0:
                    cur.first_seq, cur.first_rx, cur.last_rx, cur.last_seq = seq, rx, rx, seq
                    cur.last_tx = tx
                seen, lat_append, tl, gaps = cur.seen, cur.latencies.append, cur.timeline, cur.gaps
                run_ends = cur.run_ends
                nseen, ntl, t0 = len(seen), len(tl), cur.first_rx
                max_seq, last_rx, last_seq = cur.max_seq, cur.last_rx, cur.last_seq
                dup, reord, max_gap, last_tx = cur.dup, cur.reord, cur.max_gap, cur.last_tx
            if seq >= nseen:
                seen.extend(bytes(max(nseen, seq + 1 - nseen)))
                nseen = len(seen)
            if seen[seq]:
                dup += 1
            else:
                seen[seq] = 1
                if seq < max_seq:
                    reord += 1
                else:
                    if seq > max_seq + 1:  # a run of seqs not seen (yet) ends here
                        if len(run_ends) >= MISSING_RANGES_CAP:
                            _make_room(run_ends, seen)
                        if len(run_ends) < MISSING_RANGES_CAP:
                            run_ends[seq] = (rx, max_seq, tx)
                    max_seq = seq
                lat_append(rx - tx)
            gap = rx - last_rx
            if gap > max_gap:
                max_gap = gap
                cur.gap_end, cur.gap_before, cur.gap_after = rx, last_seq, seq
            if gap > gap_floor and len(gaps) <= GAPS_CAP:
                gaps.append((rx, gap, tx - last_tx, seq - last_seq))
            last_rx = rx
            last_tx = tx
            last_seq = seq
            bucket = (rx - t0) // 1_000_000
            if 0 <= bucket < ntl:
                tl[bucket] += 1
            elif bucket < 0:
                tl[0] += 1
            else:
                tl.extend([0] * max(ntl, bucket + 1 - ntl))
                ntl = len(tl)
                tl[bucket] += 1
        cur.max_seq, cur.last_rx, cur.last_seq = max_seq, last_rx, last_seq
        cur.dup, cur.reord, cur.max_gap, cur.last_tx = dup, reord, max_gap, last_tx
        self.foreign += foreign

    def report(self) -> dict[str, Any]:
        self.ring.read_stats()
        foreign = self.foreign
        for flow, count in self.corrupt_claims.items():
            if flow in self.flows:
                self.flows[flow].corrupt += count
            else:
                foreign += count
        return {
            "mode": "recv",
            "flows": {str(f): s.report() for f, s in sorted(self.flows.items())},
            "foreign": foreign,
            "ring_drops": self.ring.drops,
            "ring_freezes": self.ring.freezes,
        }


class UdpSink:
    """UDP sockets bound on the stream's ports that nobody reads (see "UDP sink" above).

    Dual-stack (one IPv6 socket with V6ONLY off) where the host has IPv6, else IPv4.
    SO_REUSEPORT lets checkers of several flows on one host sink the same port. A port
    something else holds is left to it: that listener already stops the replies.
    """

    def __init__(self, ports: Sequence[int]) -> None:
        self.socks: list[socket.socket] = []
        for port in ports:
            sock = self._bind(port)
            if sock is None:
                sys.stderr.write(f"agent recv: UDP port {port} is in use; no sink there\n")
            else:
                self.socks.append(sock)

    @staticmethod
    def _bind(port: int) -> socket.socket | None:
        for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
            try:
                sock = socket.socket(family, socket.SOCK_DGRAM)
            except OSError:  # no IPv6 on this host
                continue
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel's minimum
                sock.bind((address, port))
            except OSError:
                sock.close()
                continue
            return sock
        return None

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def run_recv(plan: RecvPlan) -> dict[str, Any]:
    ring = RxRing(plan.iface, plan.ring_mb)
    sink = UdpSink(plan.udp_sink)
    try:
        checker = Checker(plan, ring)
        ready()
        checker.run()
        return checker.report()
    finally:
        sink.close()
        ring.close()


# ---------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="agent.py",
        description="NPA Bench traffic agent: sequenced generator and exact checker "
        "on raw AF_PACKET sockets. Prints READY, then one JSON line at the end.",
    )
    modes = top.add_subparsers(dest="mode", required=True)
    send = modes.add_parser(
        "send",
        help="send stamped copies of a frame",
        description="Send copies of a frame, each stamped with flow, seq (from 0) and send "
        "time, in sendmmsg batches. Stops at --count/--duration or SIGTERM/SIGINT.",
    )
    send.add_argument("--iface", required=True, help="interface to send on")
    send.add_argument(
        "--frame-hex", required=True, help="the whole frame, Ethernet header included, as hex"
    )
    send.add_argument(
        "--payload-at", type=int, required=True, help="byte offset of the stamp in the frame"
    )
    send.add_argument("--flow", type=int, required=True, help="flow id (must match the frame)")
    rate = send.add_mutually_exclusive_group(required=True)
    rate.add_argument("--pps", type=float, help="paced: frame i leaves at start + i/pps")
    rate.add_argument("--max-rate", action="store_true", help="as fast as the kernel accepts")
    amount = send.add_mutually_exclusive_group(required=True)
    amount.add_argument("--count", type=int, help="number of frames")
    amount.add_argument(
        "--duration",
        type=float,
        help="seconds (paced: exactly the ceil(pps*duration) frames due in that time)",
    )
    send.add_argument(
        "--batch", type=int, default=64, help="frames per sendmmsg (default 64; paced: <= 1 ms)"
    )
    send.add_argument(
        "--start-at",
        type=float,
        metavar="EPOCH_S",
        help="print READY, then start sending when this host's clock reads EPOCH_S (seconds "
        "since the epoch): generators started one after another begin together, so no "
        "generator's start-up falls inside another's measurement. Default: at once",
    )
    recv = modes.add_parser(
        "recv",
        help="count stamped frames arriving on an interface",
        description="Count our frames (UDP or ICMP echo carrying the stamp) from a "
        "TPACKET_V3 ring: loss, duplicates, reordering, gaps, latency, timeline.",
    )
    recv.add_argument("--iface", required=True, help="interface to listen on")
    recv.add_argument(
        "--flow",
        type=int,
        action="append",
        help="report this flow (repeatable); others count as foreign. Default: every flow seen",
    )
    recv.add_argument("--duration", type=float, help="stop after this many seconds")
    recv.add_argument(
        "--idle-exit",
        type=float,
        help="stop this many seconds after the last of our frames (once one arrived)",
    )
    recv.add_argument("--ring-mb", type=int, default=64, help="ring size in MiB (default 64)")
    recv.add_argument(
        "--icmp-echo-reply",
        action="store_true",
        help="reflector mode: count only ICMP/ICMPv6 echo replies (latency = round trip)",
    )
    recv.add_argument(
        "--gaps-over",
        type=float,
        metavar="MS",
        help="also report every gap between arrivals longer than MS milliseconds (its end "
        "and length; the first 1000 a flow), to tell which gap fell in which event",
    )
    recv.add_argument(
        "--udp-sink",
        type=int,
        action="append",
        metavar="PORT",
        help="bind an unread UDP socket on PORT (repeatable), so this host's IP stack takes "
        "the stream quietly instead of answering each frame with ICMP port unreachable",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    Stop.install()
    # The hot loops make no reference cycles; without the collector, the tuples that
    # struct.unpack_from makes per frame do not trigger a generation-0 pass every 700.
    gc.disable()
    try:
        if args.mode == "send":
            emit(run_send(send_plan(args)))
        else:
            emit(run_recv(recv_plan(args)))
    except OSError as exc:  # no such interface, not allowed to open a packet socket, ...
        sys.stderr.write(f"agent {args.mode} on {args.iface}: {exc}\n")
        return 1
    return 0


def recv_plan(args: argparse.Namespace) -> RecvPlan:
    if args.ring_mb < 1:
        raise SystemExit("agent recv: --ring-mb must be >= 1")
    for port in args.udp_sink or ():
        if not 1 <= port <= 0xFFFF:
            raise SystemExit(f"agent recv: --udp-sink {port} is not a UDP port (1..65535)")
    if args.gaps_over is not None and not args.gaps_over > 0:
        raise SystemExit(f"agent recv: --gaps-over {args.gaps_over:g} must be > 0 (ms)")
    return RecvPlan(
        args.iface,
        frozenset(args.flow) if args.flow else None,
        args.duration,
        args.idle_exit,
        args.ring_mb,
        args.icmp_echo_reply,
        tuple(args.udp_sink or ()),
        int(args.gaps_over * 1e6) if args.gaps_over is not None else None,
    )


if __name__ == "__main__":
    sys.exit(main())
