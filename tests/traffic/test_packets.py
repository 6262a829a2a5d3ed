"""Test-frame templates: exact layout, scapy's checksums stay valid after stamping (offline)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from bench.traffic import wire
from bench.traffic.packets import (
    MAX_FRAME,
    PacketSpec,
    Template,
    build_template,
    describe,
)

MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")
ADDRESSES = {4: ("192.0.2.1", "198.51.100.7"), 6: ("2001:db8::1", "2001:db8:1::7")}
COMBOS = [
    (family, l4, vlan) for family in (4, 6) for l4 in ("udp", "icmp-echo") for vlan in (None, 100)
]
COMBO_IDS = [f"ipv{f}-{l4}-{'vlan' if v else 'untagged'}" for f, l4, v in COMBOS]


def make_spec(
    family: int, l4: str, vlan: int | None, frame_size: int, **extra: object
) -> PacketSpec:
    src, dst = ADDRESSES[family]
    return PacketSpec(
        *MACS,
        src,
        dst,
        l4=l4,  # type: ignore[arg-type]
        vlan=vlan,
        frame_size=frame_size,
        flow=0x1234,
        **extra,  # type: ignore[arg-type]
    )


def l4_layer(pkt: Packet) -> Packet:
    for cls in (UDP, ICMP, ICMPv6EchoRequest):
        if pkt.haslayer(cls):
            layer: Packet = pkt[cls]
            return layer
    raise AssertionError(f"no UDP/ICMP echo layer in {pkt.summary()}")


def recomputed_l4_checksum(frame: bytes) -> tuple[int, int]:
    """(checksum in the frame, checksum scapy computes for the same frame)."""
    pkt = Ether(frame)
    layer = l4_layer(pkt)
    name = "chksum" if isinstance(layer, UDP | ICMP) else "cksum"
    have = int(getattr(layer, name))
    delattr(layer, name)
    rebuilt = Ether(bytes(pkt))
    return have, int(getattr(l4_layer(rebuilt), name))


def assert_ipv4_header_valid(frame: bytes) -> None:
    pkt = Ether(frame)
    if not pkt.haslayer(IP):
        return
    have = pkt[IP].chksum
    del pkt[IP].chksum
    assert Ether(bytes(pkt))[IP].chksum == have


def sizes_for(family: int, vlan: int | None) -> list[int]:
    spec_min = make_spec(family, "udp", vlan, 1514).min_frame_size
    return [spec_min, 128, 1514, MAX_FRAME]


CASES = [
    (family, l4, vlan, size) for family, l4, vlan in COMBOS for size in sizes_for(family, vlan)
]


@pytest.mark.parametrize(("family", "l4", "vlan", "size"), CASES)
def test_template_layout(family: int, l4: str, vlan: int | None, size: int) -> None:
    spec = make_spec(family, l4, vlan, size)
    template = build_template(spec)
    frame = template.frame
    assert len(frame) == size
    expected_at = 14 + (4 if vlan else 0) + (20 if family == 4 else 40) + 8
    assert template.payload_at == expected_at == spec.header_len
    assert (template.payload_at - spec.l4_at) % 2 == 0
    assert frame[template.payload_at :] == wire.build_payload(0x1234, size - expected_at)
    assert template.target == wire.words_sum(frame, template.payload_at)

    pkt = Ether(frame)
    assert pkt.src == MACS[0]
    assert pkt.dst == MACS[1]
    assert pkt.haslayer(Dot1Q) == (vlan is not None)
    if vlan is not None:
        assert pkt[Dot1Q].vlan == vlan
        assert pkt[Dot1Q].prio == 0
    ip = pkt[IP] if family == 4 else pkt[IPv6]
    assert (ip.src, ip.dst) == ADDRESSES[family]
    if family == 4:
        assert ip.len == size - 14 - (4 if vlan else 0)
        assert ip.flags == "DF"
    else:
        assert ip.plen == size - expected_at + 8
    layer = l4_layer(pkt)
    if l4 == "udp":
        assert isinstance(layer, UDP)
        assert (layer.sport, layer.dport) == (spec.sport, spec.dport)
        assert layer.len == size - expected_at + 8
        assert layer.chksum != 0  # a real checksum, so compensation is exercised
        assert bytes(layer[Raw].load) == frame[template.payload_at :]
    elif family == 4:
        assert isinstance(layer, ICMP)
        assert (layer.type, layer.code, layer.id, layer.seq) == (8, 0, spec.icmp_id, 0)
        assert bytes(layer[Raw].load) == frame[template.payload_at :]
    else:
        assert isinstance(layer, ICMPv6EchoRequest)
        assert (layer.type, layer.id, layer.seq) == (128, spec.icmp_id, 0)
        assert bytes(layer.data) == frame[template.payload_at :]
    # Scapy's checksums of the template itself.
    have, want = recomputed_l4_checksum(frame)
    assert have == want
    assert_ipv4_header_valid(frame)


@pytest.mark.parametrize(("family", "l4", "vlan"), COMBOS, ids=COMBO_IDS)
def test_stamped_frames_keep_valid_checksums(family: int, l4: str, vlan: int | None) -> None:
    rng = random.Random(f"{family}{l4}{vlan}")
    for size in sizes_for(family, vlan):
        template = build_template(make_spec(family, l4, vlan, size))
        stamps = [(0, 0), (2**64 - 1, 2**64 - 1), (1, 2**63), (0xFFFF, 0xFFFF0000)]
        stamps += [(rng.getrandbits(64), rng.getrandbits(64)) for _ in range(40)]
        stamps += [(rng.randrange(10**7), 1_700_000_000_000_000_000 + rng.randrange(10**12))]
        for seq, tx_ns in stamps:
            frame = template.stamped(seq, tx_ns)
            assert len(frame) == size
            # Only the stamped part of the payload changes.
            start, end = template.payload_at + 8, template.payload_at + wire.HEADER_LEN
            assert frame[:start] == template.frame[:start]
            assert frame[end:] == template.frame[end:]
            have, want = recomputed_l4_checksum(frame)
            assert have == want, (seq, tx_ns)
            assert_ipv4_header_valid(frame)
            assert wire.read_stamp(frame, template.payload_at) == wire.Stamp(
                0x1234, seq, tx_ns, True
            )


def test_stamped_is_a_copy_and_template_is_frozen() -> None:
    template = build_template(make_spec(4, "udp", None, 128))
    before = template.frame
    stamped = template.stamped(5, 6)
    assert stamped != before
    assert template.frame == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        template.payload_at = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        template.spec.flow = 2  # type: ignore[misc]


def test_vlan_priority_and_ports() -> None:
    spec = make_spec(4, "udp", 4094, 200, vlan_priority=5, sport=1, dport=65535)
    pkt = Ether(build_template(spec).frame)
    assert (pkt[Dot1Q].vlan, pkt[Dot1Q].prio) == (4094, 5)
    assert (pkt[UDP].sport, pkt[UDP].dport) == (1, 65535)


def test_spec_normalises_addresses() -> None:
    spec = PacketSpec("02-AA-BB-CC-DD-EE", "02:AA:BB:CC:DD:FF", "2001:DB8:0::1", "2001:db8::0:2")
    assert spec.src_mac == "02:aa:bb:cc:dd:ee"
    assert spec.dst_mac == "02:aa:bb:cc:dd:ff"
    assert (spec.src_ip, spec.dst_ip) == ("2001:db8::1", "2001:db8::2")
    assert spec.family == 6
    assert PacketSpec(*MACS, "10.0.0.1", "10.0.0.2").family == 4


def test_describe() -> None:
    text = describe(build_template(make_spec(6, "icmp-echo", 7, 256)))
    assert "ICMPv6 Echo Request" in text
    assert "256 B" in text
    assert "vlan 7" in text
    assert "flow 4660" in text


@pytest.mark.parametrize(("family", "l4", "vlan"), COMBOS, ids=COMBO_IDS)
def test_too_small_frames_are_refused(family: int, l4: str, vlan: int | None) -> None:
    minimum = 14 + (4 if vlan else 0) + (20 if family == 4 else 40) + 8 + wire.HEADER_LEN
    # 60 bytes (the Ethernet minimum) is never enough for headers + the payload header.
    for size in (60, minimum - 1):
        with pytest.raises(ValueError, match=f"frame_size {size} is too small.*at least {minimum}"):
            make_spec(family, l4, vlan, size)
    assert len(build_template(make_spec(family, l4, vlan, minimum)).frame) == minimum


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dst_ip": "2001:db8::2"}, r"src_ip 192\.0\.2\.1 is IPv4 but dst_ip 2001:db8::2 is IPv6"),
        (
            {"src_ip": "2001:db8::2"},
            r"src_ip 2001:db8::2 is IPv6 but dst_ip 198\.51\.100\.7 is IPv4",
        ),
        ({"src_ip": "192.0.2.300"}, "src_ip '192.0.2.300' is not an IPv4 or IPv6 address"),
        ({"dst_ip": "fe80::1%eth0"}, "scoped"),
        ({"src_mac": "02:00:00:00:00"}, "src_mac '02:00:00:00:00' is not a MAC address"),
        ({"dst_mac": "zz:00:00:00:00:01"}, "dst_mac 'zz:00:00:00:00:01' is not a MAC address"),
        ({"l4": "tcp"}, "l4 must be one of udp, icmp-echo, got 'tcp'"),
        ({"vlan": 0}, r"vlan must be an integer in 1\.\.4094, got 0"),
        ({"vlan": 4095}, r"vlan must be an integer in 1\.\.4094, got 4095"),
        ({"vlan": 10, "vlan_priority": 8}, r"vlan_priority must be an integer in 0\.\.7"),
        ({"vlan_priority": 3}, "vlan_priority needs a vlan tag"),
        ({"sport": 0}, r"sport must be an integer in 1\.\.65535"),
        ({"dport": 65536}, r"dport must be an integer in 1\.\.65535"),
        ({"icmp_id": -1}, r"icmp_id must be an integer in 0\.\.65535"),
        ({"flow": 65536}, r"flow must be an integer in 0\.\.65535"),
        ({"flow": True}, r"flow must be an integer"),
        ({"frame_size": MAX_FRAME + 1}, f"frame_size {MAX_FRAME + 1} is above the maximum"),
    ],
)
def test_bad_specs_are_refused(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "src_mac": MACS[0],
        "dst_mac": MACS[1],
        "src_ip": ADDRESSES[4][0],
        "dst_ip": ADDRESSES[4][1],
    }
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        PacketSpec(**fields)  # type: ignore[arg-type]


def test_non_integer_frame_size() -> None:
    with pytest.raises(TypeError, match="frame_size must be an integer"):
        PacketSpec(*MACS, "10.0.0.1", "10.0.0.2", frame_size=128.0)  # type: ignore[arg-type]


def test_template_fields() -> None:
    spec = make_spec(4, "icmp-echo", None, 100)
    template = build_template(spec)
    assert isinstance(template, Template)
    assert template.spec is spec
    assert template == Template(template.frame, 42, spec, template.target)


@pytest.mark.parametrize(("family", "l4", "vlan"), COMBOS, ids=COMBO_IDS)
def test_checksum_check_is_not_vacuous(family: int, l4: str, vlan: int | None) -> None:
    """Patching seq without compensation breaks the checksum, and the check above sees it."""
    template = build_template(make_spec(family, l4, vlan, 128))
    frame = bytearray(template.frame)
    frame[template.payload_at + 15] = 1  # seq = 1, comp not updated
    have, want = recomputed_l4_checksum(bytes(frame))
    assert have != want
