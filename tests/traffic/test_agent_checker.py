"""The checker's decoding and bookkeeping on hand-made TPACKET_V3 blocks (no sockets).

A fake ring holds one block laid out as the kernel lays it out; every shape the
checker must recognise (or refuse) is fed through the public ``drain_block``.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, IPOption_NOP
from scapy.layers.inet import UDP as ScapyUDP
from scapy.layers.l2 import Ether

from bench.traffic import agent, wire
from tests.traffic import frames
from tests.traffic.netns import AGENT

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
T0 = 1_795_000_000_000_000_000
MAC_OFFSET = 82  # where the kernel puts an Ethernet frame in a V3 slot (as measured)


class FakeRing:
    """One block, ready for the checker, plus the counters a real ring would have."""

    def __init__(self, packets: list[tuple[bytes, int, int]]) -> None:
        self.block_nr = 1
        self.drops = 0
        self.freezes = 0
        self.map = bytearray(agent.BLOCK_SIZE)
        first = 48
        struct.pack_into("<III", self.map, 8, agent.TP_STATUS_USER, len(packets), first)
        off = first
        for i, (frame, rx_ns, pkttype) in enumerate(packets):
            size = (MAC_OFFSET + len(frame) + 15) & ~15
            nxt = size if i < len(packets) - 1 else 0
            sec, nsec = divmod(rx_ns, 1_000_000_000)
            struct.pack_into("<IIIIIIHH", self.map, off, nxt, sec, nsec, len(frame),
                             len(frame), 1, MAC_OFFSET, MAC_OFFSET + 14)  # fmt: skip
            self.map[off + 58] = pkttype
            self.map[off + MAC_OFFSET : off + MAC_OFFSET + len(frame)] = frame
            off += size

    def read_stats(self) -> None:
        pass


def stamped(template: tuple[bytes, int], seq: int, tx_ns: int) -> bytes:
    frame, at = bytearray(template[0]), template[1]
    wire.stamp(frame, at, seq, tx_ns, wire.words_sum(template[0], at))
    return bytes(frame)


def count(
    packets: list[tuple[bytes, int, int]], flows: set[int] | None = None, echo_only: bool = False
) -> dict[str, Any]:
    plan = agent.RecvPlan("x", frozenset(flows) if flows else None, None, None, 1, echo_only)
    checker = agent.Checker(plan, FakeRing(packets))  # type: ignore[arg-type]
    assert checker.drain_block()
    assert not checker.drain_block(), "the block was not handed back to the kernel"
    return checker.report()


UDP = frames.udp(MAC_A, MAC_B, flow=1)


def test_counts_losses_duplicates_reordering_gap_and_latency() -> None:
    """Seqs 0 1 2 5 4 4 9 arriving 1 ms apart (one 5 ms hole) with 100 us latency."""
    seqs = [0, 1, 2, 5, 4, 4, 9]
    rx = [T0 + i * 1_000_000 for i in range(len(seqs))]
    rx[3:] = [t + 5_000_000 for t in rx[3:]]
    packets = [(stamped(UDP, s, t - 100_000), t, 0) for s, t in zip(seqs, rx, strict=True)]
    report = count(packets)
    flow = report["flows"]["1"]
    assert (flow["received"], flow["unique"], flow["duplicates"], flow["reordered"]) == (7, 6, 1, 1)
    assert flow["missing"] == [[3, 3], [6, 8]] and flow["missing_total"] == 4
    # 3 was jumped by 5 (4 came later), 6..8 by 9: the arrivals the lost seqs are timed
    # from, with when they were received and sent
    assert flow["missing_ends"] == [[5, rx[3], rx[3] - 100_000], [9, rx[6], rx[6] - 100_000]]
    assert (flow["first_seq"], flow["max_seq"]) == (0, 9)
    assert flow["longest_gap_ns"] == 6_000_000
    assert (flow["gap_end_ns"], flow["gap_seq_before"], flow["gap_seq_after"]) == (rx[3], 2, 5)
    assert flow["latency_ns"] == {"min": 100_000, "p50": 100_000, "p99": 100_000, "max": 100_000}
    assert (flow["first_rx_ns"], flow["last_rx_ns"]) == (rx[0], rx[-1])
    assert flow["timeline"] == {
        "start_ns": rx[0],
        "bucket_ms": 1,
        "counts": [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1],
    }
    assert (report["foreign"], report["ring_drops"], report["ring_freezes"]) == (0, 0, 0)


def test_listed_gaps_tell_the_sender_s_stalls_from_the_path_s() -> None:
    """Frames sent 1 ms apart, 100 us on the way: the sender stalls 5 ms before seq 3, the
    path holds seqs 6-9 up and lets them go together 4.05 ms after 6 was sent, and seq 11
    is lost. Each gap over 1.5 ms is listed with its end, its length, the two frames'
    spacing at the sender and their seq step."""
    sends = {s: T0 + s * 1_000_000 for s in range(13)}
    sends.update({s: t + 5_000_000 for s, t in sends.items() if s >= 3})  # the stall
    rx = {s: t + 100_000 for s, t in sends.items() if s != 11}
    rx.update({s: sends[6] + 4_050_000 + (s - 6) * 1_000 for s in range(6, 10)})  # held up
    packets = [(stamped(UDP, s, sends[s]), t, 0) for s, t in sorted(rx.items())]
    plan = agent.RecvPlan("x", None, None, None, 1, False, gaps_over_ns=1_500_000)
    checker = agent.Checker(plan, FakeRing(packets))  # type: ignore[arg-type]
    assert checker.drain_block()
    flow = checker.report()["flows"]["1"]
    assert flow["gaps"] == [
        [rx[3], 6_000_000, 6_000_000, 1],  # the sender's stall: the path added nothing
        [rx[6], 4_950_000, 1_000_000, 1],  # held up 3.95 ms on the way
        [rx[12], 2_000_000, 2_000_000, 2],  # over a lost frame
    ]
    assert not flow["gaps_truncated"]
    assert flow["reordered"] == 0 and flow["missing"] == [[11, 11]]


def test_own_transmissions_are_skipped_not_counted() -> None:
    report = count([(stamped(UDP, 0, T0), T0, agent.PACKET_OUTGOING)])
    assert report["flows"] == {} and report["foreign"] == 0


@pytest.mark.parametrize(
    "template",
    [
        frames.udp(MAC_A, MAC_B, flow=1, vlan=100),
        frames.udp(MAC_A, MAC_B, flow=1, src_ip="2001:db8::1", dst_ip="2001:db8::2"),
        frames.echo_request(MAC_A, MAC_B, "192.0.2.1", "192.0.2.2", flow=1),
        frames.echo_request(MAC_A, MAC_B, "2001:db8::1", "2001:db8::2", flow=1),
    ],
    ids=["udp-802.1q-in-data", "udp-ipv6", "icmp-echo-request", "icmpv6-echo-request"],
)
def test_frame_shapes_are_found(template: tuple[bytes, int]) -> None:
    report = count([(stamped(template, s, T0), T0 + s, 0) for s in range(3)])
    assert report["flows"]["1"]["unique"] == 3 and report["foreign"] == 0


def test_ipv4_options_move_the_payload() -> None:
    """A 4-byte IPv4 option (NOPs): IHL 6, the payload 4 bytes further than the fast path's."""
    pkt = (
        Ether(src=MAC_A, dst=MAC_B)
        / IP(src="198.51.100.1", dst="198.51.100.2", options=[IPOption_NOP()] * 4)
        / ScapyUDP(sport=1, dport=2)
        / wire.build_payload(1, 40)
    )
    template = (bytes(pkt), UDP[1] + 4)
    report = count([(stamped(template, 0, T0), T0, 0)])
    assert report["flows"]["1"]["unique"] == 1


def test_reflector_mode_counts_echo_replies_only() -> None:
    request = frames.echo_request(MAC_A, MAC_B, "192.0.2.1", "192.0.2.2", flow=1)
    reply = bytearray(request[0])
    reply[34] = 0  # ICMP type: echo reply
    request6 = frames.echo_request(MAC_A, MAC_B, "2001:db8::1", "2001:db8::2", flow=2)
    reply6 = bytearray(request6[0])
    reply6[54] = 129
    packets = [
        (stamped(request, 0, T0), T0, 0),
        (stamped((bytes(reply), request[1]), 0, T0), T0, 0),
        (stamped(request6, 0, T0), T0, 0),
        (stamped((bytes(reply6), request6[1]), 0, T0), T0, 0),
        (stamped(UDP, 1, T0), T0, 0),
    ]
    report = count(packets, echo_only=True)
    assert {k: v["unique"] for k, v in report["flows"].items()} == {"1": 1, "2": 1}
    assert report["foreign"] == 3


def test_foreign_frames() -> None:
    arp_like = bytes.fromhex("02000000000b02000000000a0806") + bytes(60)
    no_magic = bytearray(UDP[0])
    no_magic[UDP[1]] ^= 0xFF
    short = UDP[0][:60]
    other_flow = stamped(frames.udp(MAC_A, MAC_B, flow=9), 0, T0)
    packets = [(f, T0, 0) for f in (arp_like, bytes(no_magic), short, other_flow)]
    report = count(packets, flows={1})
    assert report["foreign"] == 4
    assert report["flows"]["1"]["received"] == 0
    assert report["flows"]["1"]["latency_ns"] is None
    assert report["flows"]["1"]["first_seq"] is None


def test_corrupt_frames_are_counted_apart() -> None:
    bad = bytearray(stamped(UDP, 1, T0))
    bad[UDP[1] + wire.SEQ_OFFSET + 8] ^= 1  # tx_ns: the crc no longer matches
    packets = [(stamped(UDP, 0, T0), T0, 0), (bytes(bad), T0 + 1, 0), (stamped(UDP, 2, T0), T0, 0)]
    flow = count(packets)["flows"]["1"]
    assert (flow["corrupt"], flow["unique"], flow["missing"]) == (1, 2, [[1, 1]])


def test_interleaved_flows_are_kept_apart() -> None:
    other = frames.udp(MAC_A, MAC_B, flow=2)
    packets = []
    for seq in range(50):
        packets.append((stamped(UDP, seq, T0), T0 + seq * 1000, 0))
        if seq % 3 == 0:
            packets.append((stamped(other, seq // 3, T0), T0 + seq * 1000 + 1, 0))
    report = count(packets)
    assert report["flows"]["1"]["unique"] == 50 and report["flows"]["1"]["reordered"] == 0
    assert report["flows"]["2"]["unique"] == 17 and report["flows"]["2"]["max_seq"] == 16


def test_missing_ranges_are_capped() -> None:
    seen = bytearray(5000)
    seen[::2] = b"\x01" * 2500
    ranges, total, truncated = agent._missing_ranges(seen, 4998)
    assert len(ranges) == agent.MISSING_RANGES_CAP and truncated and total == 2499
    assert ranges[0] == [1, 1]


def test_jumps_filled_later_make_room_for_new_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for two jumps: 2 jumps over 1 (which arrives next), 4 over 3 (lost);
    6 over 5 finds the record full and takes the place of the jump 1 filled."""
    monkeypatch.setattr(agent, "MISSING_RANGES_CAP", 2)
    seqs = [0, 2, 1, 4, 6]
    rx = [T0 + i * 1_000_000 for i in range(len(seqs))]
    report = count([(stamped(UDP, q, t - 100_000), t, 0) for q, t in zip(seqs, rx, strict=True)])
    flow = report["flows"]["1"]
    assert flow["missing"] == [[3, 3], [5, 5]]
    assert flow["missing_ends"] == [[4, rx[3], rx[3] - 100_000], [6, rx[4], rx[4] - 100_000]]


def test_nearest_rank_percentiles() -> None:
    ordered = list(range(1, 101))
    assert agent._nearest_rank(ordered, 50) == 50
    assert agent._nearest_rank(ordered, 99) == 99
    assert agent._nearest_rank([7], 99) == 7


def test_sender_refuses_a_frame_for_another_flow() -> None:
    frame, at = UDP
    done = subprocess.run(
        [sys.executable, str(AGENT), "send", "--iface", "lo", "--frame-hex", frame.hex(),
         "--payload-at", str(at), "--flow", "2", "--pps", "10", "--count", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    assert "carries flow 1" in done.stderr and "READY" not in done.stdout


def test_agent_runs_alone_next_to_wire(tmp_path: Path) -> None:
    """As on a lab host: only agent.py and wire.py, no bench package, no site-packages."""
    for name in ("agent.py", "wire.py"):
        (tmp_path / name).write_bytes((AGENT.parent / name).read_bytes())
    done = subprocess.run(
        [sys.executable, "-S", "-E", str(tmp_path / "agent.py"), "recv", "--help"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--icmp-echo-reply" in done.stdout
