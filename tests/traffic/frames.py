"""Test frames built with scapy: (frame bytes, offset of the stamp), as the controller would."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet

from bench.traffic import wire


def _with_payload(headers: Packet, flow: int, size: int) -> tuple[bytes, int]:
    at = len(headers)
    frame = bytes(headers / wire.build_payload(flow, max(size - at, wire.HEADER_LEN)))
    return frame, at


def udp(
    src_mac: str,
    dst_mac: str,
    *,
    flow: int = 1,
    size: int = 128,
    src_ip: str = "198.51.100.1",
    dst_ip: str = "198.51.100.2",
    vlan: int | None = None,
) -> tuple[bytes, int]:
    eth: Packet = Ether(src=src_mac, dst=dst_mac)
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    net = IPv6(src=src_ip, dst=dst_ip) if ":" in dst_ip else IP(src=src_ip, dst=dst_ip)
    return _with_payload(eth / net / UDP(sport=40000, dport=40001), flow, size)


def echo_request(
    src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, *, flow: int = 1, size: int = 128
) -> tuple[bytes, int]:
    """An ICMP (IPv4) or ICMPv6 echo request carrying the stamp: the target's kernel answers."""
    eth = Ether(src=src_mac, dst=dst_mac)
    if ":" in dst_ip:
        headers = eth / IPv6(src=src_ip, dst=dst_ip) / ICMPv6EchoRequest(id=0x4E50, seq=1)
    else:
        headers = eth / IP(src=src_ip, dst=dst_ip) / ICMP(type=8, id=0x4E50, seq=1)
    return _with_payload(headers, flow, size)
