"""The NIC emulator completes checksums a sending veth left to hardware (CHECKSUM_PARTIAL)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, raw

from nic_emulators.wire_checksum import complete_checksum

MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}


def _spoil(good: bytes, layer: type[Packet]) -> bytes:
    frame = Ether(good)
    frame[layer].chksum = 0x1234  # what a veth hands over: not the real checksum
    return raw(frame)


@pytest.mark.parametrize(
    ("packet", "layer"),
    [
        (
            Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2) / b"seven!!",
            TCP,
        ),
        (Ether(**MACS) / Dot1Q(vlan=5) / IP() / TCP(flags="S"), TCP),
        (Ether(**MACS) / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=3, dport=4) / b"abc", UDP),
        (Ether(**MACS) / IP() / UDP() / b"odd", UDP),
    ],
)
def test_the_checksum_is_the_one_the_stack_would_compute(
    packet: Packet, layer: type[Packet]
) -> None:
    good = raw(packet)
    bad = _spoil(good, layer)
    assert bad != good
    assert complete_checksum(bad) == good


def test_frames_without_a_transport_checksum_pass_unchanged() -> None:
    frame = raw(Ether(**MACS) / ARP(pdst="10.0.0.2"))
    assert complete_checksum(frame) == frame
    truncated = raw(Ether(**MACS) / IP() / TCP())[:30]
    assert complete_checksum(truncated) == truncated
