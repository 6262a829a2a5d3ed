"""Offline capture verification: pcaps written with scapy, read back and summarised exactly."""

from __future__ import annotations

import gzip
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import EDecimal, PcapReader, PcapWriter, wrpcap, wrpcapng

from bench.traffic import wire
from bench.traffic.packets import PacketSpec, Template, build_template
from bench.traffic.pcap import (
    CapturedFrame,
    CaptureSummary,
    FlowSummary,
    iter_stamps,
    read_stamps,
    summarise,
)

GEN_MAC, DUT_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
T0 = 1_700_000_000_123_456_789
STEP = 100_000  # 0.1 ms between arrivals
BLACKOUT = 7_654_321


def template(src: str, dst: str, **kw: object) -> Template:
    return build_template(PacketSpec(GEN_MAC, DUT_MAC, src, dst, **kw))  # type: ignore[arg-type]


UDP4 = template("192.0.2.1", "192.0.2.2", frame_size=128, flow=1)
UDP6_VLAN = template("2001:db8::1", "2001:db8::2", vlan=42, vlan_priority=3, frame_size=200, flow=2)
ICMP4 = template("192.0.2.1", "192.0.2.2", l4="icmp-echo", frame_size=98, flow=3)
ICMP6_VLAN = template("2001:db8::1", "2001:db8::2", l4="icmp-echo", vlan=7, frame_size=150, flow=4)


def echo_reply(request: bytes) -> bytes:
    """What the destination's kernel answers: addresses swapped, type reply, new checksum."""
    pkt = Ether(request)
    pkt.src, pkt.dst = pkt.dst, pkt.src
    if pkt.haslayer(IP):
        pkt[IP].src, pkt[IP].dst = pkt[IP].dst, pkt[IP].src
        del pkt[IP].chksum
        pkt[ICMP].type = 0
        del pkt[ICMP].chksum
        return bytes(pkt)
    ip6 = pkt[IPv6]
    request_layer = pkt[ICMPv6EchoRequest]
    reply = ICMPv6EchoReply(id=request_layer.id, seq=request_layer.seq, data=request_layer.data)
    ip6.remove_payload()
    out = Ether(src=pkt.src, dst=pkt.dst)
    if pkt.haslayer(Dot1Q):
        out = out / Dot1Q(vlan=pkt[Dot1Q].vlan)
    return bytes(out / IPv6(src=ip6.dst, dst=ip6.src, hlim=64) / reply)


@dataclass
class Entry:
    data: bytes
    rx_ns: int
    expected: CapturedFrame | None  # None: not one of ours


def ours(t: Template, seq: int, rx_ns: int, tx_ns: int, *, reply: bool = False) -> Entry:
    data = t.stamped(seq, tx_ns)
    if reply:
        data = echo_reply(data)
    kind = "udp" if t.spec.l4 == "udp" else ("echo-reply" if reply else "echo-request")
    frame = CapturedFrame(
        rx_ns=rx_ns,
        flow=t.spec.flow,
        seq=seq,
        tx_ns=tx_ns,
        intact=True,
        length=len(data),
        vlan=t.spec.vlan,
        kind=kind,  # type: ignore[arg-type]
        number=0,  # set by numbered()
    )
    return Entry(data, rx_ns, frame)


def foreign_frames() -> list[bytes]:
    stamped = UDP4.stamped(77, 1)
    payload = stamped[UDP4.payload_at :]
    base = Ether(src=GEN_MAC, dst=DUT_MAC)
    fragment = Ether(stamped)
    fragment[IP].flags = "MF"
    del fragment[IP].chksum
    old_version = bytearray(stamped)
    old_version[UDP4.payload_at + 4] = 2  # a future payload version: not ours to judge
    return [
        bytes(
            Ether(src=GEN_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.1", pdst="192.0.2.2")
        ),
        bytes(base / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=53) / Raw(b"x" * 40)),
        bytes(base / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(dport=80) / Raw(payload)),
        bytes(base / IP(src="192.0.2.1", dst="192.0.2.2") / ICMP() / Raw(b"abcdefgh" * 6)),
        bytes(base / IP(src="192.0.2.2", dst="192.0.2.1") / ICMP(type=3, code=3) / stamped[14:]),
        bytes(base / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP() / Raw(b"\0" * 40)),
        bytes(fragment),
        bytes(old_version),
        stamped[:50],  # cut by the snap length
        b"\x01\x80\xc2\x00\x00\x0e" + bytes.fromhex(GEN_MAC.replace(":", "")) + b"\x88\xcc",
    ]


def scenario() -> tuple[list[Entry], dict[tuple[int, str], FlowSummary]]:
    """A capture with loss, duplicates, reordering, corruption, a blackout, VLANs and replies."""
    entries: list[Entry] = []
    # Flow 1 (IPv4 UDP): arrival order of seqs; 5, 7 and 14 never arrive.
    flow1 = [0, 1, 2, 3, 3, 4, 8, 9, 11, 10, 12, 9, 13, 6, 15]
    flow1_rx: list[int] = []
    flow1_lat: list[int] = []
    foreign = foreign_frames()
    for i, seq in enumerate(flow1):
        rx = T0 + i * STEP + (BLACKOUT if i >= 6 else 0)
        tx = T0 + seq * STEP - 30_000  # a duplicate carries the original's send time
        entries.append(ours(UDP4, seq, rx, tx))
        flow1_rx.append(rx)
        flow1_lat.append(rx - tx)
        if i < len(foreign):
            entries.append(Entry(foreign[i], rx + 1, None))
        if i == 4:  # flow 2 (IPv6 UDP, VLAN 42): all five, in order, interleaved
            for seq2 in range(5):
                rx2 = rx + 10 + seq2
                entries.append(ours(UDP6_VLAN, seq2, rx2, rx2 - 25_000))
        if i == 9:  # a corrupted frame of flow 1 claiming seq 5: counted, not believed
            bad = ours(UDP4, 5, rx + 20, rx)
            data = bytearray(bad.data)
            data[UDP4.payload_at + 20] ^= 0xFF  # tx_ns damaged after the crc was computed
            assert bad.expected is not None
            tx_bad = int.from_bytes(data[UDP4.payload_at + 16 : UDP4.payload_at + 24], "big")
            entries.append(
                Entry(bytes(data), rx + 20, bad.expected._replace(tx_ns=tx_bad, intact=False))
            )
    # Flow 3 (ICMP echo): requests 0..3 and the replies, the one to 2 lost.
    t3 = T0 + 10**9
    for seq in range(4):
        entries.append(ours(ICMP4, seq, t3 + seq * 1000, t3 + seq * 1000))
        if seq != 2:
            entries.append(ours(ICMP4, seq, t3 + seq * 1000 + 300, t3 + seq * 1000, reply=True))
    # Flow 4 (ICMPv6 echo, VLAN 7): one request, its reply.
    entries.append(ours(ICMP6_VLAN, 0, t3 + 10_000, t3 + 9_000))
    entries.append(ours(ICMP6_VLAN, 0, t3 + 10_500, t3 + 9_000, reply=True))

    gaps = [b - a for a, b in itertools.pairwise(flow1_rx)]
    assert max(gaps) == STEP + BLACKOUT
    lat = sorted(flow1_lat)
    expected = {
        (1, "udp"): FlowSummary(
            flow=1,
            kind="udp",
            count=15,
            unique=13,
            duplicates=2,  # 3 and 9 again
            reordered=2,  # 10 after 11, 6 after 13
            corrupt=1,
            start=0,
            min_seq=0,
            max_seq=15,
            missing=((5, 5), (7, 7), (14, 14)),
            longest_gap_ns=STEP + BLACKOUT,
            gap_end_ns=flow1_rx[6],
            first_rx_ns=flow1_rx[0],
            last_rx_ns=flow1_rx[-1],
            latency_p50_ns=lat[7],  # nearest rank: ceil(0.5 * 15) = 8th
            latency_p99_ns=lat[14],
            latency_max_ns=lat[14],
        ),
        (2, "udp"): FlowSummary(
            flow=2,
            kind="udp",
            count=5,
            unique=5,
            duplicates=0,
            reordered=0,
            corrupt=0,
            start=0,
            min_seq=0,
            max_seq=4,
            missing=(),
            longest_gap_ns=1,
            gap_end_ns=flow1_rx[4] + 11,
            first_rx_ns=flow1_rx[4] + 10,
            last_rx_ns=flow1_rx[4] + 14,
            latency_p50_ns=25_000,
            latency_p99_ns=25_000,
            latency_max_ns=25_000,
        ),
        (3, "echo-request"): FlowSummary(
            3, "echo-request", 4, 4, 0, 0, 0, 0, 0, 3, (), 1000, t3 + 1000, t3, t3 + 3000, 0, 0, 0
        ),
        (3, "echo-reply"): FlowSummary(
            3, "echo-reply", 3, 3, 0, 0, 0, 0, 0, 3, ((2, 2),), 2000, t3 + 3300, t3 + 300,
            t3 + 3300, 300, 300, 300,
        ),
        (4, "echo-request"): FlowSummary(
            4, "echo-request", 1, 1, 0, 0, 0, 0, 0, 0, (), 0, 0, t3 + 10_000, t3 + 10_000,
            1000, 1000, 1000,
        ),
        (4, "echo-reply"): FlowSummary(
            4, "echo-reply", 1, 1, 0, 0, 0, 0, 0, 0, (), 0, 0, t3 + 10_500, t3 + 10_500,
            1500, 1500, 1500,
        ),
    }  # fmt: skip
    return entries, expected


def numbered(entries: list[Entry], rx_of: dict[int, int] | None = None) -> list[CapturedFrame]:
    out = []
    for index, entry in enumerate(entries, start=1):
        if entry.expected is not None:
            rx = entry.rx_ns if rx_of is None else rx_of[index]
            out.append(entry.expected._replace(number=index, rx_ns=rx))
    return out


def write_with_wrpcap(path: Path, entries: list[Entry], *, nano: bool = True) -> None:
    packets = []
    for entry in entries:
        pkt = Ether(entry.data)
        assert bytes(pkt) == entry.data
        pkt.time = EDecimal(entry.rx_ns) / EDecimal(10**9)
        packets.append(pkt)
    wrpcap(str(path), packets, nano=nano)


def to_us(ns: int) -> int:
    return (ns + 500) // 1000 * 1000


def test_read_stamps_exact(tmp_path: Path) -> None:
    entries, _ = scenario()
    path = tmp_path / "capture.pcap"
    write_with_wrpcap(path, entries)
    frames = read_stamps(path)
    assert frames == numbered(entries)
    assert {f.vlan for f in frames if f.flow in (2, 4)} == {42, 7}
    assert {f.vlan for f in frames if f.flow in (1, 3)} == {None}
    assert [f.length for f in frames if f.flow == 2] == [200] * 5
    assert read_stamps(str(path), flow=3) == [f for f in frames if f.flow == 3]
    assert read_stamps(path, flow=99) == []


def test_summarise_exact(tmp_path: Path) -> None:
    entries, expected = scenario()
    path = tmp_path / "capture.pcap"
    write_with_wrpcap(path, entries)
    summary = summarise(read_stamps(path))
    assert dict(summary.flows) == expected
    assert list(summary.flows) == sorted(expected)
    assert summary.flow(1).lost == 3
    assert summary.flow(2) == expected[(2, "udp")]
    assert summary.flow(3, "echo-reply").lost == 1
    with pytest.raises(KeyError, match="flow 3: 2 kinds"):
        summary.flow(3)
    with pytest.raises(KeyError, match="flow 9: 0 kinds"):
        summary.flow(9)
    # Streamed straight from the file, without a list in between: the same.
    assert summarise(iter_stamps(path)) == summary


def test_microsecond_pcap_and_pcapng(tmp_path: Path) -> None:
    entries, _ = scenario()
    rounded = {i: to_us(e.rx_ns) for i, e in enumerate(entries, start=1)}
    path = tmp_path / "us.pcap"
    write_with_wrpcap(path, entries, nano=False)
    assert read_stamps(path) == numbered(entries, rounded)

    ng = tmp_path / "capture.pcapng"
    packets = []
    for entry in entries:
        pkt = Ether(entry.data)
        pkt.time = EDecimal(entry.rx_ns) / EDecimal(10**9)
        packets.append(pkt)
    wrpcapng(str(ng), packets)
    # scapy's pcapng writer keeps microseconds (through a float): its own reader is the reference.
    with PcapReader(str(ng)) as reader:
        written = {i: int(p.time * 10**9) for i, p in enumerate(reader, start=1)}
    assert all(abs(written[i] - e.rx_ns) < 2000 for i, e in enumerate(entries, start=1))
    assert read_stamps(ng) == numbered(entries, written)


def write_raw(path: Path, linktype: int, frames: list[tuple[bytes, int]]) -> None:
    """Frames of any link type, nanosecond timestamps, optionally cut to a snap length."""
    writer = PcapWriter(str(path), linktype=linktype, nano=True, sync=True)
    writer.write_header(None)
    try:
        for data, rx_ns in frames:
            writer.write_packet(data, sec=rx_ns // 10**9, usec=rx_ns % 10**9)
    finally:
        writer.close()


def cooked(frame: bytes, v2: bool) -> bytes:
    """The frame as ``tcpdump -i any`` writes it (the 802.1Q tag, if any, after the header)."""
    proto = int.from_bytes(frame[12:14], "big")
    rest = frame[14:]
    src = bytes.fromhex(GEN_MAC.replace(":", ""))
    if v2:
        head: Packet = CookedLinuxV2(
            proto=proto, ifindex=3, lladdrtype=1, pkttype=4, lladdrlen=6, src=src + b"\0\0"
        )
    else:
        head = CookedLinux(pkttype=4, lladdrtype=1, lladdrlen=6, src=src + b"\0\0", proto=proto)
    return bytes(head / Raw(rest))


@pytest.mark.parametrize(("linktype", "v2"), [(113, False), (276, True)])
def test_linux_cooked_captures(tmp_path: Path, linktype: int, v2: bool) -> None:
    path = tmp_path / "any.pcap"
    frames = [
        (cooked(UDP4.stamped(0, 5), v2), T0),
        (cooked(UDP6_VLAN.stamped(1, 6), v2), T0 + 1),
        (cooked(ICMP4.stamped(2, 7), v2), T0 + 2),
    ]
    write_raw(path, linktype, frames)
    got = read_stamps(path)
    assert [(f.flow, f.seq, f.tx_ns, f.kind, f.rx_ns, f.intact) for f in got] == [
        (1, 0, 5, "udp", T0, True),
        (2, 1, 6, "udp", T0 + 1, True),
        (3, 2, 7, "echo-request", T0 + 2, True),
    ]
    assert got[1].vlan == 42


def test_raw_ip_capture(tmp_path: Path) -> None:
    path = tmp_path / "tun.pcap"
    write_raw(path, 101, [(UDP4.stamped(3, 9)[14:], T0), (ICMP6_VLAN.stamped(4, 8)[18:], T0 + 5)])
    got = read_stamps(path)
    assert [(f.flow, f.seq, f.tx_ns, f.kind, f.rx_ns) for f in got] == [
        (1, 3, 9, "udp", T0),
        (4, 4, 8, "echo-request", T0 + 5),
    ]


def test_truncated_frames_are_skipped_and_length_is_the_wire_length(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    whole = UDP6_VLAN.stamped(0, 1)
    writer = PcapWriter(str(path), linktype=1, nano=True, sync=True)
    writer.write_header(None)
    try:
        # Cut right after the payload header (still readable) and inside it (not).
        end = UDP6_VLAN.payload_at + wire.HEADER_LEN
        writer.write_packet(whole[:end], sec=1, usec=0, wirelen=len(whole))
        writer.write_packet(whole[: end - 1], sec=1, usec=1, wirelen=len(whole))
    finally:
        writer.close()
    got = read_stamps(path)
    assert [(f.seq, f.length, f.number, f.rx_ns) for f in got] == [(0, 200, 1, 10**9)]


def test_window_capture_counts_missing_from_its_first_seq() -> None:
    frames = [
        CapturedFrame(T0 + seq, 7, seq, T0, True, 128, None, "udp", seq)
        for seq in (100, 101, 102, 103, 104, 106, 107)
    ]
    window = summarise(frames, start=None).flow(7)
    assert (window.start, window.missing, window.lost) == (100, ((105, 105),), 1)
    whole = summarise(frames).flow(7)
    assert (whole.start, whole.missing, whole.lost) == (0, ((0, 99), (105, 105)), 101)
    late = summarise(frames, start=103).flow(7)
    assert late.missing == ((105, 105),)


def test_summarise_definitions_on_a_crafted_sequence() -> None:
    seqs = [0, 2, 1, 1, 5, 3, 5, 4, 9]
    frames = [
        CapturedFrame(T0 + i * 10, 1, s, T0, True, 128, None, "udp", i + 1)
        for i, s in enumerate(seqs)
    ]
    s = summarise(frames).flow(1)
    assert (s.count, s.unique, s.duplicates, s.reordered) == (9, 7, 2, 3)  # reordered: 1, 3, 4
    assert s.missing == ((6, 8),)
    assert (s.longest_gap_ns, s.gap_end_ns) == (10, T0 + 10)
    # Timestamps that go backwards (capture from several CPUs) are no gap.
    back = [frames[0]._replace(rx_ns=T0 + 50), frames[1]._replace(rx_ns=T0), frames[2]]
    s = summarise(back).flow(1)
    assert (s.longest_gap_ns, s.gap_end_ns) == (20, T0 + 20)


def test_empty_and_only_corrupt() -> None:
    assert summarise([]) == CaptureSummary({})
    bad = CapturedFrame(T0, 1, 5, T0, False, 128, None, "udp", 1)
    s = summarise([bad]).flow(1)
    assert (s.count, s.unique, s.corrupt, s.missing, s.max_seq, s.lost) == (0, 0, 1, (), -1, 0)


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_text("not a capture at all\n")
    with pytest.raises(ValueError, match=r"notes\.pcap: not a pcap or pcapng capture"):
        read_stamps(path)
    with pytest.raises(FileNotFoundError):
        read_stamps(tmp_path / "missing.pcap")


def test_unsupported_link_type(tmp_path: Path) -> None:
    path = tmp_path / "wifi.pcap"
    write_raw(path, 105, [(b"\0" * 64, T0)])
    with pytest.raises(ValueError, match="unsupported link type 105"):
        read_stamps(path)


def test_gzipped_and_empty_files(tmp_path: Path) -> None:
    entries, _ = scenario()
    path = tmp_path / "capture.pcap"
    write_with_wrpcap(path, entries)
    packed = tmp_path / "capture.pcap.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert read_stamps(packed) == read_stamps(path)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a pcap or pcapng capture"):
        read_stamps(empty)
