"""Offline verification of a capture (tcpdump's pcap or pcapng) of the bench's test frames.

:func:`read_stamps` streams the file with scapy's ``RawPcapReader`` (pcap in
µs or ns precision, pcapng, gzip; one frame in memory at a time) and finds the
``wire`` payload in UDP, ICMP echo request/reply and ICMPv6 echo
request/reply, over Ethernet with or without 802.1Q tags (also Linux cooked
captures, ``tcpdump -i any``, and bare IP). Headers are read with ``struct``,
not with scapy's dissector: scapy's ``PcapReader`` dissects about 3,000 frames
per second, far too slow for a capture of a million frames; this reads about
250,000. A snap length of 128 bytes is enough for every frame the bench sends
(``tcpdump --time-stamp-precision nano`` gives nanosecond arrival times).

:func:`summarise` counts per flow with the live checker's definitions.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from scapy.error import Scapy_Exception
from scapy.utils import RawPcapReader

from bench.traffic import wire

Kind = Literal["udp", "echo-request", "echo-reply"]

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
#: Bare IP packets (tun devices): DLT_RAW as written by libpcap, and its IPv4/IPv6 variants.
LINKTYPE_RAW = (101, 228, 229)
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
_IPV6_EXTENSIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_ICMP_KINDS: dict[int, dict[int, Kind]] = {
    1: {8: "echo-request", 0: "echo-reply"},
    58: {128: "echo-request", 129: "echo-reply"},
}
_U16 = struct.Struct(">H")
_TAG = struct.Struct(">HH")


class CapturedFrame(NamedTuple):
    """One of our frames found in a capture (immutable; a tuple, which is cheap to make)."""

    #: Capture timestamp (ns since the epoch, the pcap's precision).
    rx_ns: int
    flow: int
    seq: int
    tx_ns: int
    #: The payload's crc32 matched; a frame that is not intact says nothing reliable.
    intact: bool
    #: Length of the frame on the wire (the pcap's original length).
    length: int
    #: The (outer) 802.1Q VLAN id, or None if untagged.
    vlan: int | None
    kind: Kind
    #: Position of the frame in the capture, from 1 (as Wireshark numbers them).
    number: int


def _locate(data: bytes, linktype: int) -> tuple[int, Kind, int | None] | None:
    """Where the UDP / ICMP echo payload starts, its kind and the VLAN id, or None."""
    vlan: int | None = None
    if linktype == LINKTYPE_ETHERNET:
        (ethertype,) = _U16.unpack_from(data, 12)
        l3 = 14
    elif linktype == LINKTYPE_LINUX_SLL:
        (ethertype,) = _U16.unpack_from(data, 14)
        l3 = 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        (ethertype,) = _U16.unpack_from(data, 0)
        l3 = 20
    elif linktype in LINKTYPE_RAW:
        ethertype = ETH_IPV6 if data[0] >> 4 == 6 else ETH_IPV4
        l3 = 0
    else:
        raise ValueError(f"unsupported link type {linktype}")
    # 802.1Q / 802.1ad tags: TCI, then the next EtherType (libpcap puts them back in cooked
    # captures too, right after the cooked header).
    while ethertype in _VLAN_TPIDS:
        (tci, ethertype) = _TAG.unpack_from(data, l3)
        if vlan is None:
            vlan = tci & 0x0FFF
        l3 += 4
    if ethertype == ETH_IPV4:
        if data[l3] >> 4 != 4:
            return None
        (fragment,) = _U16.unpack_from(data, l3 + 6)
        if fragment & 0x3FFF:  # more fragments, or not the first one
            return None
        proto = data[l3 + 9]
        l4 = l3 + (data[l3] & 0x0F) * 4
    elif ethertype == ETH_IPV6:
        if data[l3] >> 4 != 6:
            return None
        proto = data[l3 + 6]
        l4 = l3 + 40
        for _ in range(8):
            if proto not in _IPV6_EXTENSIONS:
                break
            proto, l4 = data[l4], l4 + (data[l4 + 1] + 1) * 8
    else:
        return None
    if proto == 17:
        return l4 + 8, "udp", vlan
    kinds = _ICMP_KINDS.get(proto)
    if kinds is None or data[l4 + 1] != 0:  # ICMP code
        return None
    kind = kinds.get(data[l4])
    return (l4 + 8, kind, vlan) if kind is not None else None


def _open(path: str) -> Any:
    # Opened here so that the file is closed when scapy refuses it (it would leak it).
    fdesc = Path(path).open("rb")  # noqa: SIM115 - closed by the reader, or below
    try:
        # The reader's metaclass takes a path or a file object (pcap or pcapng); its
        # __init__ annotation says str only.
        return cast(Any, RawPcapReader)(fdesc)
    except Scapy_Exception as exc:
        fdesc.close()
        raise ValueError(f"{path}: not a pcap or pcapng capture ({exc})") from None
    except BaseException:
        fdesc.close()
        raise


def _records(reader: Any) -> Iterator[tuple[bytes, int, int, int]]:
    """(data, rx_ns, wire length, link type) of every record."""
    if hasattr(reader, "interfaces"):  # pcapng: link type and resolution per interface
        for data, meta in reader:
            if meta.tshigh is None:  # a simple packet block has no timestamp
                rx_ns = 0
            else:
                ticks = (meta.tshigh << 32) + meta.tslow
                rx_ns = ticks * 1_000_000_000 // meta.tsresol
            yield data, rx_ns, meta.wirelen, meta.linktype
        return
    linktype = int(reader.linktype)
    scale = 1 if reader.nano else 1000
    for data, (sec, fraction, wirelen, _) in reader:
        yield data, sec * 1_000_000_000 + fraction * scale, wirelen, linktype


def iter_stamps(
    pcap_path: str | os.PathLike[str], flow: int | None = None
) -> Iterator[CapturedFrame]:
    """Our frames in ``pcap_path`` (of ``flow``, or all), in capture order, streamed."""
    path = os.fspath(pcap_path)
    reader = _open(path)
    # wire.read_stamp, inlined (it builds a Stamp per frame; this runs for a million frames).
    header, magic, version = wire.HEADER, wire.MAGIC, wire.VERSION
    header_len, check_end, crc32 = wire.HEADER_LEN, wire.CHECK_OFFSET, zlib.crc32
    try:
        for index, (data, rx_ns, wirelen, linktype) in enumerate(_records(reader), start=1):
            try:
                found = _locate(data, linktype)
            except (IndexError, struct.error):  # truncated (snap length) or malformed
                continue
            if found is None:
                continue
            at, kind, vlan = found
            if len(data) < at + header_len:
                continue
            tag, ver, _, flow_id, seq, tx_ns, check, _ = header.unpack_from(data, at)
            if tag != magic or ver != version or (flow is not None and flow_id != flow):
                continue
            yield CapturedFrame(
                rx_ns,
                flow_id,
                seq,
                tx_ns,
                crc32(data[at : at + check_end]) == check,
                wirelen if wirelen is not None else len(data),
                vlan,
                kind,
                index,
            )
    finally:
        reader.close()


def read_stamps(pcap_path: str | os.PathLike[str], flow: int | None = None) -> list[CapturedFrame]:
    """Our frames in ``pcap_path`` (of ``flow``, or all), in capture order.

    Frames that are not ours (no ``wire`` magic in a UDP / ICMP echo payload)
    are skipped, as are IP fragments and frames cut short by the snap length.
    """
    return list(iter_stamps(pcap_path, flow))


@dataclass(frozen=True)
class FlowSummary:
    """What a capture shows of one flow in one kind (UDP, echo requests or echo replies).

    Definitions, as the live checker's: ``count`` intact frames arrived, of
    ``unique`` sequence numbers; a duplicate is a seq seen before; a reordered
    frame has a seq lower than the highest seen so far and is not a duplicate;
    ``missing`` are the seqs in ``[start, max_seq]`` never seen, as inclusive
    ranges. Frames whose crc32 does not match are only counted, in ``corrupt``.
    """

    flow: int
    kind: Kind
    count: int
    unique: int
    duplicates: int
    reordered: int
    corrupt: int
    #: Where the missing ranges start counting (0: the flow's first seq).
    start: int
    min_seq: int
    max_seq: int
    missing: tuple[tuple[int, int], ...]
    #: Longest time between consecutive arrivals, and the arrival that ended it.
    longest_gap_ns: int
    gap_end_ns: int
    first_rx_ns: int
    last_rx_ns: int
    #: rx_ns - tx_ns (one-way delay, or round trip for echo replies): nearest-rank percentiles.
    latency_p50_ns: int
    latency_p99_ns: int
    latency_max_ns: int

    @property
    def lost(self) -> int:
        """How many seqs in ``[start, max_seq]`` never arrived."""
        return sum(last - first + 1 for first, last in self.missing)


@dataclass(frozen=True)
class CaptureSummary:
    """Per-flow summaries of a capture, keyed by (flow, kind)."""

    flows: Mapping[tuple[int, Kind], FlowSummary] = field(default_factory=dict)

    def flow(self, flow: int, kind: Kind | None = None) -> FlowSummary:
        """The summary of ``flow`` (its only kind, or ``kind``); KeyError if absent."""
        if kind is not None:
            return self.flows[(flow, kind)]
        found = [s for (f, _), s in self.flows.items() if f == flow]
        if len(found) != 1:
            kinds = ", ".join(s.kind for s in found) or "none"
            raise KeyError(f"flow {flow}: {len(found)} kinds in the capture ({kinds}); pass kind")
        return found[0]


class _Tally:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.highest = -1
        self.count = 0
        self.duplicates = 0
        self.reordered = 0
        self.corrupt = 0
        self.longest_gap = 0
        self.gap_end = 0
        self.first_rx: int | None = None
        self.last_rx = 0
        self.latencies: list[int] = []

    def add(self, frame: CapturedFrame) -> None:
        if not frame.intact:
            self.corrupt += 1
            return
        self.count += 1
        seq = frame.seq
        if seq in self.seen:
            self.duplicates += 1
        else:
            if seq < self.highest:
                self.reordered += 1
            self.seen.add(seq)
            self.highest = max(self.highest, seq)
        if self.first_rx is None:
            self.first_rx = frame.rx_ns
        else:
            gap = frame.rx_ns - self.last_rx
            if gap > self.longest_gap:
                self.longest_gap, self.gap_end = gap, frame.rx_ns
        self.last_rx = frame.rx_ns
        self.latencies.append(frame.rx_ns - frame.tx_ns)

    def summary(self, flow: int, kind: Kind, start: int | None) -> FlowSummary:
        seqs = sorted(self.seen)
        low = seqs[0] if seqs else 0
        high = seqs[-1] if seqs else -1
        begin = low if start is None else start
        missing: list[tuple[int, int]] = []
        expected = begin
        for seq in seqs:
            if seq < begin:
                continue
            if seq > expected:
                missing.append((expected, seq - 1))
            expected = seq + 1
        latencies = sorted(self.latencies)

        def rank(p: float) -> int:
            if not latencies:
                return 0
            return latencies[max(0, math.ceil(p * len(latencies)) - 1)]

        return FlowSummary(
            flow=flow,
            kind=kind,
            count=self.count,
            unique=len(seqs),
            duplicates=self.duplicates,
            reordered=self.reordered,
            corrupt=self.corrupt,
            start=begin,
            min_seq=low,
            max_seq=high,
            missing=tuple(missing),
            longest_gap_ns=self.longest_gap,
            gap_end_ns=self.gap_end,
            first_rx_ns=self.first_rx or 0,
            last_rx_ns=self.last_rx,
            latency_p50_ns=rank(0.50),
            latency_p99_ns=rank(0.99),
            latency_max_ns=latencies[-1] if latencies else 0,
        )


def summarise(frames: Iterable[CapturedFrame], start: int | None = 0) -> CaptureSummary:
    """Count ``frames`` (in arrival order) per flow and kind.

    ``start`` is the first seq every flow should have (0: the generator's
    first); None counts missing seqs from the lowest seq captured, for a
    capture of a window in the middle of a run.
    """
    tallies: dict[tuple[int, Kind], _Tally] = {}
    for frame in frames:
        key = (frame.flow, frame.kind)
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _Tally()
        tally.add(frame)
    return CaptureSummary(
        {key: tallies[key].summary(key[0], key[1], start) for key in sorted(tallies)}
    )
