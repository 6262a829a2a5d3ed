"""Test-frame design: a spec, built once with scapy into the bytes the hot loop patches.

A :class:`PacketSpec` says what a flow's frames look like (addresses, UDP or
ICMP echo, optional 802.1Q tag, exact frame size, flow id).
:func:`build_template` builds it once with scapy, which computes every length
and checksum, and returns a :class:`Template`: the frame bytes, where the
payload (``wire``) starts, and the checksum-compensation target. The
generator then only copies the frame and calls ``wire.stamp`` on it; the
UDP/ICMP checksum scapy computed stays valid for every sequence number.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from bench.traffic import wire

L4 = Literal["udp", "icmp-echo"]
L4_KINDS: tuple[L4, ...] = ("udp", "icmp-echo")

ETHER_LEN = 14
DOT1Q_LEN = 4
IPV4_LEN = 20
IPV6_LEN = 40
#: UDP and ICMP echo headers are both 8 bytes (even: see ``wire``'s compensation).
L4_LEN = 8
#: Ethernet minimum without FCS; every spec is larger anyway (headers + payload header).
MIN_FRAME = 60
#: Jumbo frames up to this size (without FCS).
MAX_FRAME = 9000

DEFAULT_SPORT = 47000
DEFAULT_DPORT = 47001
DEFAULT_ICMP_ID = 0x4E50  # "NP"
TTL = 64

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _check_mac(name: str, value: str) -> str:
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise ValueError(f"{name} {value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return mac


def _check_ip(name: str, value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ValueError(f"{name} {value!r}: scoped IPv6 addresses (%zone) are not supported")
    return address


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True)
class PacketSpec:
    """What every frame of one flow looks like.

    ``frame_size`` is the whole Ethernet frame without FCS (as written to an
    AF_PACKET socket, as tcpdump shows it). The IP family is inferred from the
    addresses, which must agree.
    """

    src_mac: str
    dst_mac: str
    src_ip: str
    dst_ip: str
    l4: L4 = "udp"
    sport: int = DEFAULT_SPORT
    dport: int = DEFAULT_DPORT
    icmp_id: int = DEFAULT_ICMP_ID
    #: 802.1Q VLAN id (1..4094), or None for an untagged frame.
    vlan: int | None = None
    #: 802.1Q priority (PCP, 0..7); only with ``vlan``.
    vlan_priority: int = 0
    frame_size: int = 128
    flow: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "src_mac", _check_mac("src_mac", self.src_mac))
        object.__setattr__(self, "dst_mac", _check_mac("dst_mac", self.dst_mac))
        src = _check_ip("src_ip", self.src_ip)
        dst = _check_ip("dst_ip", self.dst_ip)
        if src.version != dst.version:
            raise ValueError(
                f"src_ip {self.src_ip} is IPv{src.version} but dst_ip {self.dst_ip} "
                f"is IPv{dst.version}: both must be of the same family"
            )
        object.__setattr__(self, "src_ip", str(src))
        object.__setattr__(self, "dst_ip", str(dst))
        if self.l4 not in L4_KINDS:
            raise ValueError(f"l4 must be one of {', '.join(L4_KINDS)}, got {self.l4!r}")
        _check_range("sport", self.sport, 1, 0xFFFF)
        _check_range("dport", self.dport, 1, 0xFFFF)
        _check_range("icmp_id", self.icmp_id, 0, 0xFFFF)
        if self.vlan is not None:
            _check_range("vlan", self.vlan, 1, 4094)
        _check_range("vlan_priority", self.vlan_priority, 0, 7)
        if self.vlan is None and self.vlan_priority:
            raise ValueError("vlan_priority needs a vlan tag (vlan=None)")
        _check_range("flow", self.flow, 0, 0xFFFF)
        if isinstance(self.frame_size, bool) or not isinstance(self.frame_size, int):
            raise TypeError(f"frame_size must be an integer, got {self.frame_size!r}")
        if self.frame_size > MAX_FRAME:
            raise ValueError(f"frame_size {self.frame_size} is above the maximum {MAX_FRAME}")
        if self.frame_size < self.min_frame_size:
            raise ValueError(
                f"frame_size {self.frame_size} is too small for {self.describe_layers()}: "
                f"at least {self.min_frame_size} bytes ({self.header_len} of headers "
                f"+ {wire.HEADER_LEN} of payload header; Ethernet minimum {MIN_FRAME})"
            )

    @property
    def family(self) -> Literal[4, 6]:
        return 6 if ":" in self.src_ip else 4

    @property
    def l4_at(self) -> int:
        """Offset of the UDP / ICMP header in the frame."""
        vlan = DOT1Q_LEN if self.vlan is not None else 0
        return ETHER_LEN + vlan + (IPV4_LEN if self.family == 4 else IPV6_LEN)

    @property
    def header_len(self) -> int:
        """Bytes of headers before the payload (Ethernet, 802.1Q, IP, UDP/ICMP)."""
        return self.l4_at + L4_LEN

    @property
    def min_frame_size(self) -> int:
        return max(MIN_FRAME, self.header_len + wire.HEADER_LEN)

    @property
    def payload_len(self) -> int:
        return self.frame_size - self.header_len

    def describe_layers(self) -> str:
        layers = ["Ether"]
        if self.vlan is not None:
            layers.append(f"802.1Q({self.vlan})")
        layers.append(f"IPv{self.family}")
        if self.l4 == "udp":
            layers.append("UDP")
        else:
            layers.append("ICMPv6 echo" if self.family == 6 else "ICMP echo")
        return "/".join(layers)


@dataclass(frozen=True)
class Template:
    """A built frame of ``spec`` with seq 0, and what stamping it needs."""

    frame: bytes
    #: Offset of the ``wire`` payload in ``frame``.
    payload_at: int
    spec: PacketSpec
    #: ``wire.words_sum(frame, payload_at)``: what ``wire.stamp`` keeps constant.
    target: int

    def stamped(self, seq: int, tx_ns: int) -> bytes:
        """A copy of the frame carrying ``seq`` and ``tx_ns`` (for tests and small uses)."""
        frame = bytearray(self.frame)
        wire.stamp(frame, self.payload_at, seq, tx_ns, self.target)
        return bytes(frame)


def _layers(spec: PacketSpec, payload: bytes) -> Packet:
    pkt: Packet = Ether(src=spec.src_mac, dst=spec.dst_mac)
    if spec.vlan is not None:
        pkt = pkt / Dot1Q(vlan=spec.vlan, prio=spec.vlan_priority)
    if spec.family == 4:
        # DF and id 0, as Linux sends unfragmentable datagrams; scapy fills in the checksum.
        pkt = pkt / IP(src=spec.src_ip, dst=spec.dst_ip, ttl=TTL, id=0, flags="DF")
        if spec.l4 == "udp":
            return pkt / UDP(sport=spec.sport, dport=spec.dport) / Raw(payload)
        return pkt / ICMP(type="echo-request", code=0, id=spec.icmp_id, seq=0) / Raw(payload)
    pkt = pkt / IPv6(src=spec.src_ip, dst=spec.dst_ip, hlim=TTL)
    if spec.l4 == "udp":
        return pkt / UDP(sport=spec.sport, dport=spec.dport) / Raw(payload)
    return pkt / ICMPv6EchoRequest(id=spec.icmp_id, seq=0, data=payload)


def build_template(spec: PacketSpec) -> Template:
    """Build ``spec``'s frame once with scapy (lengths and checksums by scapy)."""
    payload = wire.build_payload(spec.flow, spec.payload_len)
    frame = bytes(_layers(spec, payload))
    payload_at = spec.header_len
    if len(frame) != spec.frame_size or frame[payload_at:] != payload:
        raise AssertionError(
            f"scapy built {len(frame)} bytes for {spec.describe_layers()}, "
            f"expected {spec.frame_size} with the payload at {payload_at}"
        )
    # wire.stamp keeps the payload's 16-bit word sum constant; that leaves the L4
    # checksum valid only if the payload's words line up with the checksum's words.
    if (payload_at - spec.l4_at) % 2:
        raise AssertionError("the payload must start at an even offset from the L4 header")
    if spec.l4 == "udp" and frame[spec.l4_at + 6 : spec.l4_at + 8] == b"\0\0":
        raise AssertionError("the UDP checksum must be computed (not 0) for compensation")
    return Template(frame, payload_at, spec, wire.words_sum(frame, payload_at))


def describe(template: Template) -> str:
    """One line for logs: scapy's summary of the frame, its size and the flow."""
    summary = Ether(template.frame).summary()
    spec = template.spec
    tag = f" vlan {spec.vlan}" if spec.vlan is not None else ""
    size = len(template.frame)
    return f"{summary} [{size} B, flow {spec.flow}{tag}, payload at {template.payload_at}]"
