"""The embedded switch's rules, frame by frame: delivery, filters, VLANs, policy, counters.

Run ``python -m tests.nic.test_eswitch`` for the forwarding micro-benchmark
(``bench_forwarding``); it is deliberately not a test, since timings depend on
the machine.
"""

from __future__ import annotations

import time

import pytest
from scapy.layers.l2 import Dot1Q, Ether

from nic_emulators.config import PortPolicy
from nic_emulators.eswitch import DROP_REASONS, UPLINK, ESwitch
from nic_emulators.frames import (
    BROADCAST,
    frame_vid,
    is_tagged,
    mac_str,
    parse_mac,
    strip_tag,
    vlan_tag,
)
from nic_emulators.port_config import MULTICAST_LIMIT, PolicyError, PortConfig

MAC0 = bytes.fromhex("020000000000")
MAC1 = bytes.fromhex("020000000001")
MAC2 = bytes.fromhex("020000000002")
OTHER = bytes.fromhex("02aaaaaaaaaa")  # a host on the wire
UNKNOWN = bytes.fromhex("02bbbbbbbbbb")
GROUP = bytes.fromhex("01005e000001")
GROUP2 = bytes.fromhex("01005e000002")
IPV4 = b"\x08\x00"


def eth(
    dst: bytes, src: bytes, payload_len: int = 46, vid: int | None = None, pcp: int = 0
) -> bytes:
    """An Ethernet frame with ``payload_len`` bytes after the (optionally tagged) header."""
    tag = b"" if vid is None else vlan_tag(vid, pcp)
    return (
        dst
        + src
        + tag
        + IPV4
        + bytes(range(256)) * (payload_len // 256)
        + b"\x5a" * (payload_len % 256)
    )


def port_cfg(mac: bytes, **kw: object) -> PortConfig:
    return PortConfig(mac=mac, enabled=True, **kw)  # type: ignore[arg-type]


@pytest.fixture
def sw() -> ESwitch:
    """vf0, vf1 and vport:g2, all enabled, default policy (VLANs 1-4094, no MAC change)."""
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy())
    s.add_port("vf1", port_cfg(MAC1), PortPolicy())
    s.add_port("vport:g2", port_cfg(MAC2), PortPolicy())
    return s


def names(out: list[tuple[str, bytes]]) -> list[str]:
    return [name for name, _ in out]


def drops(s: ESwitch, port: str) -> dict[str, int]:
    return {k: v for k, v in s.counters(port).items() if k.startswith("drop_") and v}


# -- frame helpers -----------------------------------------------------------


def test_frame_helpers_agree_with_scapy() -> None:
    frame = eth(BROADCAST, MAC0, vid=100, pcp=5)
    parsed = Ether(frame)
    assert parsed[Dot1Q].vlan == 100
    assert parsed[Dot1Q].prio == 5
    assert is_tagged(frame)
    assert frame_vid(frame) == 100
    assert strip_tag(frame) == eth(BROADCAST, MAC0)
    assert frame_vid(strip_tag(frame)) == -1
    assert parse_mac(mac_str(MAC1)) == MAC1
    with pytest.raises(ValueError, match="not a MAC"):
        parse_mac("02:00:00:00:00")


# -- delivery ----------------------------------------------------------------


def test_unicast_to_known_port_goes_only_there(sw: ESwitch) -> None:
    frame = eth(MAC1, MAC0)
    assert sw.from_port("vf0", frame) == [("vf1", frame)]


def _configured(default_vlan: int | None) -> ESwitch:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy())
    s.add_port("vf1", port_cfg(MAC1), PortPolicy())
    s.add_port("vport:g2", port_cfg(MAC2), PortPolicy())
    s.set_antispoof("vf0", True)
    s.set_mtu("vf0", 1000)
    s.add_vlan_range("vf0", 5, 5)
    s.add_vlan_range("vf1", 5, 7)
    s.set_multicast("vf1", [GROUP])
    s.set_default_vlan("vf0", default_vlan)
    return s


@pytest.mark.parametrize("default_vlan", [None, 7])
def test_a_batch_is_switched_as_its_frames_one_by_one(default_vlan: int | None) -> None:
    """``from_port_many`` (a VF's TX poll) reads the port's settings once and adds up its
    counters at the end: the deliveries and every counter match frame-by-frame switching."""
    frames = [
        eth(MAC1, MAC0),  # to vf1
        eth(UNKNOWN, MAC0),  # to the wire
        eth(BROADCAST, MAC0),  # flooded
        eth(GROUP, MAC0),  # vf1 subscribed
        eth(MAC1, MAC0)[:10],  # runt
        eth(MAC1, OTHER),  # spoofed
        eth(MAC1, MAC0, payload_len=1001),  # over the MTU
        eth(MAC1, MAC0, vid=5),  # joined VLAN (refused under a port VLAN)
        eth(UNKNOWN, MAC0, vid=6),  # VLAN not joined
        eth(MAC2, MAC0, payload_len=1000),  # at the MTU, to the vport
    ]
    batch, single = _configured(default_vlan), _configured(default_vlan)
    out: list[tuple[str, bytes]] = []
    batch.from_port_many("vf0", frames, out)
    assert out == [delivery for frame in frames for delivery in single.from_port("vf0", frame)]
    assert len(out) > 4  # the batch was not all dropped
    for port in (*batch.ports(), UPLINK):
        assert batch.counters(port) == single.counters(port), port
    # with a wire list, the uplink's share goes there as bare frames, in order
    split = _configured(default_vlan)
    rest: list[tuple[str, bytes]] = []
    wire: list[bytes] = []
    split.from_port_many("vf0", frames, rest, wire)
    assert wire == [frame for port, frame in out if port == UPLINK]
    assert rest == [(port, frame) for port, frame in out if port != UPLINK]
    assert split.counters(UPLINK) == batch.counters(UPLINK)


def test_a_batch_from_a_disabled_or_unknown_port_is_counted_and_goes_nowhere(sw: ESwitch) -> None:
    sw.disable("vf0")
    out: list[tuple[str, bytes]] = []
    sw.from_port_many("vf0", iter([eth(MAC1, MAC0)] * 2), out)
    sw.from_port_many("vf9", iter([eth(MAC1, MAC0)] * 3), out)
    assert out == []
    assert drops(sw, "vf0") == {"drop_disabled": 2}
    assert sw.unknown_source == 3


def test_unicast_unknown_goes_to_uplink_only(sw: ESwitch) -> None:
    frame = eth(UNKNOWN, MAC0)
    assert sw.from_port("vf0", frame) == [(UPLINK, frame)]


def test_unicast_to_own_mac_is_not_hairpinned(sw: ESwitch) -> None:
    out = sw.from_port("vf0", eth(MAC0, MAC0))
    assert names(out) == [UPLINK]


def test_broadcast_from_port_reaches_all_other_enabled_ports_and_uplink(sw: ESwitch) -> None:
    frame = eth(BROADCAST, MAC0)
    out = sw.from_port("vf0", frame)
    assert names(out) == ["vf1", "vport:g2", UPLINK]
    assert all(f == frame for _, f in out)


def test_broadcast_not_hairpinned_even_to_promiscuous_source(sw: ESwitch) -> None:
    sw.set_rx_mode("vf0", promisc=True, allmulti=True, broadcast=True)
    assert "vf0" not in names(sw.from_port("vf0", eth(BROADCAST, MAC0)))
    assert "vf0" not in names(sw.from_port("vf0", eth(GROUP, MAC0)))


def test_broadcast_flag_off_filters_broadcast(sw: ESwitch) -> None:
    sw.set_rx_mode("vf1", promisc=False, allmulti=False, broadcast=False)
    assert names(sw.from_port("vf0", eth(BROADCAST, MAC0))) == ["vport:g2", UPLINK]
    assert names(sw.from_uplink(eth(BROADCAST, OTHER))) == ["vf0", "vport:g2"]


def test_multicast_goes_to_subscribed_ports_and_uplink(sw: ESwitch) -> None:
    sw.set_multicast("vf1", [GROUP])
    assert names(sw.from_port("vf0", eth(GROUP, MAC0))) == ["vf1", UPLINK]
    assert names(sw.from_port("vf0", eth(GROUP2, MAC0))) == [UPLINK]
    assert names(sw.from_uplink(eth(GROUP, OTHER))) == ["vf1"]
    assert sw.from_uplink(eth(GROUP2, OTHER)) == []


def test_allmulti_accepts_any_multicast_but_not_foreign_unicast(sw: ESwitch) -> None:
    sw.set_rx_mode("vf1", promisc=False, allmulti=True, broadcast=True)
    assert names(sw.from_uplink(eth(GROUP2, OTHER))) == ["vf1"]
    assert sw.from_uplink(eth(UNKNOWN, OTHER)) == []


def test_uplink_unicast_goes_to_its_port_and_promiscuous_ports(sw: ESwitch) -> None:
    frame = eth(MAC1, OTHER)
    assert names(sw.from_uplink(frame)) == ["vf1"]
    sw.set_rx_mode("vport:g2", promisc=True, allmulti=False, broadcast=True)
    assert sw.from_uplink(frame) == [("vf1", frame), ("vport:g2", frame)]


def test_uplink_unknown_unicast_only_to_promiscuous_else_no_port_drop(sw: ESwitch) -> None:
    frame = eth(UNKNOWN, OTHER)
    assert sw.from_uplink(frame) == []
    assert drops(sw, UPLINK) == {"drop_no_port": 1}
    sw.set_rx_mode("vf0", promisc=True, allmulti=False, broadcast=True)
    assert sw.from_uplink(frame) == [("vf0", frame)]
    assert drops(sw, UPLINK) == {"drop_no_port": 1}


def test_promiscuous_port_does_not_see_internal_unicast(sw: ESwitch) -> None:
    """Port-to-port unicast is delivered to its port only (the uplink path is what promisc sees)."""
    sw.set_rx_mode("vport:g2", promisc=True, allmulti=False, broadcast=True)
    assert names(sw.from_port("vf0", eth(MAC1, MAC0))) == ["vf1"]
    assert names(sw.from_port("vf0", eth(UNKNOWN, MAC0))) == [UPLINK]
    assert names(sw.from_port("vf0", eth(GROUP, MAC0))) == ["vport:g2", UPLINK]


def test_frames_are_delivered_unpadded(sw: ESwitch) -> None:
    short = MAC1 + MAC0 + IPV4 + b"hi"
    assert sw.from_port("vf0", short) == [("vf1", short)]
    header_only = MAC0 + OTHER + IPV4
    assert sw.from_uplink(header_only) == [("vf0", header_only)]


# -- enabled / disabled --------------------------------------------------------


def test_disabled_port_neither_sends_nor_receives(sw: ESwitch) -> None:
    sw.disable("vf1")
    assert sw.from_port("vf1", eth(MAC0, MAC1)) == []
    assert drops(sw, "vf1") == {"drop_disabled": 1}
    assert names(sw.from_port("vf0", eth(BROADCAST, MAC0))) == ["vport:g2", UPLINK]
    assert names(sw.from_port("vf0", eth(MAC1, MAC0))) == [UPLINK]
    assert sw.from_uplink(eth(MAC1, OTHER)) == []
    assert sw.counters("vf1")["rx_packets"] == 0
    sw.enable("vf1")
    assert names(sw.from_uplink(eth(MAC1, OTHER))) == ["vf1"]


def test_new_port_starts_disabled() -> None:
    s = ESwitch()
    s.add_port("vf0", PortConfig(mac=MAC0), PortPolicy())
    assert s.from_port("vf0", eth(OTHER, MAC0)) == []
    assert s.from_uplink(eth(MAC0, OTHER)) == []


def test_enable_refused_while_another_enabled_port_has_the_mac(sw: ESwitch) -> None:
    sw.add_port("vport:g0", PortConfig(mac=MAC0), PortPolicy())
    with pytest.raises(PolicyError) as err:
        sw.enable("vport:g0")
    assert err.value.code == "EBUSY"
    assert "vport:g0" in str(err.value)
    assert "vf0" in str(err.value)
    assert mac_str(MAC0) in str(err.value)
    # The guest switches from passthrough to emulation: VF off, then vport on.
    sw.disable("vf0")
    sw.enable("vport:g0")
    assert names(sw.from_uplink(eth(MAC0, OTHER))) == ["vport:g0"]
    assert names(sw.from_port("vf1", eth(MAC0, MAC1))) == ["vport:g0"]


def test_enabled_mac_conflict_refused_on_add_replace_and_set_mac() -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy())
    with pytest.raises(PolicyError) as err:
        s.add_port("vport:g0", port_cfg(MAC0), PortPolicy())
    assert err.value.code == "EBUSY"
    assert s.ports() == ["vf0"]
    s.add_port("vf1", port_cfg(MAC1), PortPolicy(mac_change=True))
    with pytest.raises(PolicyError) as err:
        s.set_mac("vf1", MAC0)
    assert err.value.code == "EBUSY"
    with pytest.raises(PolicyError) as err:
        s.replace_config("vf1", port_cfg(MAC0))
    assert err.value.code == "EBUSY"
    assert s.config("vf1").mac == MAC1


# -- VLANs -----------------------------------------------------------------------


def test_tagged_rx_only_for_joined_vlans_and_kept_tagged(sw: ESwitch) -> None:
    tagged = eth(MAC0, OTHER, vid=100)
    assert sw.from_uplink(tagged) == []
    sw.add_vlan_range("vf0", 100, 102)
    assert sw.from_uplink(tagged) == [("vf0", tagged)]
    assert names(sw.from_uplink(eth(MAC0, OTHER))) == ["vf0"]  # untagged still accepted
    sw.del_vlan_range("vf0", 101, 200)
    assert sw.config("vf0").vlans == frozenset({100})
    sw.del_vlan_range("vf0", 100, 100)
    assert sw.from_uplink(tagged) == []


def test_tagged_broadcast_reaches_only_members(sw: ESwitch) -> None:
    sw.add_vlan_range("vf1", 7, 7)
    assert names(sw.from_uplink(eth(BROADCAST, OTHER, vid=7))) == ["vf1"]
    sw.add_vlan_range("vf0", 7, 7)
    assert names(sw.from_port("vf0", eth(BROADCAST, MAC0, vid=7))) == ["vf1", UPLINK]


def test_tagged_tx_needs_joined_vlan(sw: ESwitch) -> None:
    frame = eth(UNKNOWN, MAC0, vid=5)
    assert sw.from_port("vf0", frame) == []
    assert drops(sw, "vf0") == {"drop_vlan": 1}
    sw.add_vlan_range("vf0", 5, 5)
    assert sw.from_port("vf0", frame) == [(UPLINK, frame)]


def test_unicast_to_port_failing_vlan_check_counts_filtered(sw: ESwitch) -> None:
    sw.add_vlan_range("vf0", 9, 9)
    sw.set_rx_mode("vport:g2", promisc=True, allmulti=False, broadcast=True)
    assert sw.from_port("vf0", eth(MAC1, MAC0, vid=9)) == []
    assert sw.from_uplink(eth(MAC1, OTHER, vid=9)) == []
    assert drops(sw, "vf1") == {"drop_filtered": 2}
    assert drops(sw, "vport:g2") == {}  # promiscuous non-members are not counted
    assert drops(sw, UPLINK) == {}  # the address is known: not a no-port drop
    assert sw.counters("vf0")["tx_packets"] == 1


def test_default_vlan_tags_untagged_tx(sw: ESwitch) -> None:
    sw.set_default_vlan("vf0", 42)
    out = sw.from_port("vf0", eth(UNKNOWN, MAC0))
    assert names(out) == [UPLINK]
    wire = Ether(out[0][1])
    assert wire[Dot1Q].vlan == 42
    assert wire[Dot1Q].prio == 0
    assert wire[Dot1Q].type == 0x0800
    assert out[0][1] == eth(UNKNOWN, MAC0, vid=42)


def test_default_vlan_refuses_tagged_tx(sw: ESwitch) -> None:
    sw.add_vlan_range("vf0", 42, 42)
    sw.set_default_vlan("vf0", 42)
    assert sw.from_port("vf0", eth(UNKNOWN, MAC0, vid=42)) == []
    assert drops(sw, "vf0") == {"drop_vlan": 1}


def test_default_vlan_rx_strips_its_tag_and_refuses_others(sw: ESwitch) -> None:
    sw.set_default_vlan("vf0", 42)
    untagged = eth(MAC0, OTHER)
    assert sw.from_uplink(eth(MAC0, OTHER, vid=42)) == [("vf0", untagged)]
    assert sw.from_uplink(eth(MAC0, OTHER, vid=42, pcp=6)) == [("vf0", untagged)]
    assert sw.from_uplink(untagged) == []
    assert sw.from_uplink(eth(MAC0, OTHER, vid=43)) == []
    assert drops(sw, "vf0") == {"drop_filtered": 2}
    assert names(sw.from_uplink(eth(BROADCAST, OTHER))) == ["vf1", "vport:g2"]
    sw.set_default_vlan("vf0", None)
    assert sw.from_uplink(untagged) == [("vf0", untagged)]


def test_default_vlan_between_ports(sw: ESwitch) -> None:
    sw.set_default_vlan("vf0", 10)
    sw.set_default_vlan("vf1", 10)
    sw.add_vlan_range("vport:g2", 10, 10)
    frame = eth(BROADCAST, MAC0)
    out = dict(sw.from_port("vf0", frame))
    assert out["vf1"] == frame  # same port VLAN: tag inserted and stripped again
    assert out["vport:g2"] == eth(BROADCAST, MAC0, vid=10)  # member: sees the tag
    assert out[UPLINK] == eth(BROADCAST, MAC0, vid=10)
    sw.set_default_vlan("vf1", 11)
    assert "vf1" not in dict(sw.from_port("vf0", frame))


# -- TX checks -----------------------------------------------------------------


def test_spoofed_source_dropped_counted_not_delivered(sw: ESwitch) -> None:
    assert sw.from_port("vf0", eth(MAC1, OTHER)) == []
    assert sw.from_port("vf0", eth(BROADCAST, MAC1)) == []
    assert drops(sw, "vf0") == {"drop_spoofed": 2}
    assert sw.counters("vf1")["rx_packets"] == 0
    assert sw.counters("vf0")["tx_packets"] == 0


def test_antispoof_off_when_policy_allows_forwards_foreign_source() -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy(antispoof=False))
    s.set_antispoof("vf0", False)
    frame = eth(UNKNOWN, OTHER)
    assert s.from_port("vf0", frame) == [(UPLINK, frame)]


def test_mtu_drop_counts_payload_without_tag(sw: ESwitch) -> None:
    sw.add_vlan_range("vf0", 3, 3)
    assert names(sw.from_port("vf0", eth(UNKNOWN, MAC0, 1500))) == [UPLINK]
    assert names(sw.from_port("vf0", eth(UNKNOWN, MAC0, 1500, vid=3))) == [UPLINK]
    assert sw.from_port("vf0", eth(UNKNOWN, MAC0, 1501)) == []
    assert sw.from_port("vf0", eth(UNKNOWN, MAC0, 1501, vid=3)) == []
    assert drops(sw, "vf0") == {"drop_mtu": 2}
    sw.set_mtu("vf0", 9000)
    assert names(sw.from_port("vf0", eth(UNKNOWN, MAC0, 9000))) == [UPLINK]


def test_runts_dropped(sw: ESwitch) -> None:
    assert sw.from_port("vf0", MAC1 + MAC0 + b"\x08") == []
    assert sw.from_port("vf0", MAC1 + MAC0 + b"\x81\x00\x00") == []  # tag cut short
    assert drops(sw, "vf0") == {"drop_runt": 2}
    assert sw.from_uplink(MAC1 + OTHER) == []
    assert drops(sw, UPLINK) == {"drop_runt": 1}
    assert sw.counters(UPLINK)["rx_packets"] == 0


@pytest.mark.parametrize(
    ("disabled", "frame", "reason"),
    [
        (True, MAC1 + OTHER, "drop_disabled"),  # disabled before runt
        (False, eth(MAC1, OTHER, 1501, vid=4000), "drop_mtu"),  # mtu before spoofed, vlan
        (False, eth(MAC1, OTHER, vid=4000), "drop_spoofed"),  # spoofed before vlan
    ],
)
def test_tx_check_order(sw: ESwitch, disabled: bool, frame: bytes, reason: str) -> None:
    if disabled:
        sw.disable("vf0")
    assert sw.from_port("vf0", frame) == []
    assert drops(sw, "vf0") == {reason: 1}


def test_unknown_source_port_is_dropped(sw: ESwitch) -> None:
    assert sw.from_port("vf9", eth(BROADCAST, MAC0)) == []
    assert sw.unknown_source == 1


# -- multicast list -------------------------------------------------------------


def group(i: int) -> bytes:
    return b"\x01\x00\x5e\x00\x01" + bytes([i])


def test_multicast_limit_is_32(sw: ESwitch) -> None:
    sw.set_multicast("vf0", [group(i) for i in range(MULTICAST_LIMIT)])
    assert len(sw.config("vf0").multicast) == MULTICAST_LIMIT
    with pytest.raises(PolicyError) as err:
        sw.set_multicast("vf0", [group(i) for i in range(MULTICAST_LIMIT + 1)])
    assert err.value.code == "ENOSPC"
    assert "allmulti" in str(err.value)
    assert "vf0" in str(err.value)
    assert "33" in str(err.value)
    assert len(sw.config("vf0").multicast) == MULTICAST_LIMIT


def test_multicast_list_takes_group_addresses_only(sw: ESwitch) -> None:
    with pytest.raises(PolicyError) as err:
        sw.set_multicast("vf0", [MAC1])
    assert err.value.code == "EINVAL"
    with pytest.raises(PolicyError) as err:
        sw.replace_config("vf0", port_cfg(MAC0, multicast=frozenset(group(i) for i in range(40))))
    assert err.value.code == "ENOSPC"


# -- policy ------------------------------------------------------------------------


def test_set_mac_refused_without_mac_change(sw: ESwitch) -> None:
    sw.set_mac("vf0", MAC0)  # unchanged: allowed
    with pytest.raises(PolicyError) as err:
        sw.set_mac("vf0", UNKNOWN)
    assert err.value.code == "EPERM"
    message = str(err.value)
    assert "vf0" in message
    assert "MAC" in message
    assert mac_str(UNKNOWN) in message
    assert "forbids" in message
    assert sw.config("vf0").mac == MAC0


def test_set_mac_allowed_moves_unicast_delivery() -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy(mac_change=True))
    s.set_mac("vf0", UNKNOWN)
    assert names(s.from_uplink(eth(UNKNOWN, OTHER))) == ["vf0"]
    assert s.from_uplink(eth(MAC0, OTHER)) == []
    assert s.from_port("vf0", eth(OTHER, MAC0)) == []  # old MAC is now spoofed


@pytest.mark.parametrize("mac", [GROUP, bytes(6), b"\x02\x00\x00"])
def test_set_mac_invalid(mac: bytes) -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy(mac_change=True))
    with pytest.raises(PolicyError) as err:
        s.set_mac("vf0", mac)
    assert err.value.code == "EINVAL"


def test_vlan_outside_policy_refused() -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy(vlans=((10, 20), (30, 30))))
    s.add_vlan_range("vf0", 12, 15)
    with pytest.raises(PolicyError) as err:
        s.add_vlan_range("vf0", 18, 25)
    assert err.value.code == "EPERM"
    message = str(err.value)
    assert "vf0" in message
    assert "21-25" in message
    assert "10-20, 30" in message
    assert s.config("vf0").vlans == frozenset(range(12, 16))
    with pytest.raises(PolicyError) as err:
        s.set_default_vlan("vf0", 31)
    assert err.value.code == "EPERM"


def test_no_vlans_policy_refuses_any_vlan() -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy(vlans=()))
    with pytest.raises(PolicyError, match="allows VLANs none") as err:
        s.add_vlan_range("vf0", 1, 1)
    assert err.value.code == "EPERM"


@pytest.mark.parametrize(("lo", "hi"), [(0, 5), (4094, 4095), (10, 9)])
def test_invalid_vlan_range(sw: ESwitch, lo: int, hi: int) -> None:
    with pytest.raises(PolicyError) as err:
        sw.add_vlan_range("vf0", lo, hi)
    assert err.value.code == "EINVAL"
    assert "vf0" in str(err.value)


@pytest.mark.parametrize("vid", [0, 4095])
def test_invalid_default_vlan(sw: ESwitch, vid: int) -> None:
    with pytest.raises(PolicyError) as err:
        sw.set_default_vlan("vf0", vid)
    assert err.value.code == "EINVAL"


@pytest.mark.parametrize("mtu", [67, 9001])
def test_mtu_outside_policy_refused(mtu: int) -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy(mtu_max=9000))
    with pytest.raises(PolicyError) as err:
        s.set_mtu("vf0", mtu)
    assert err.value.code == "EINVAL"
    assert "vf0" in str(err.value)
    assert str(mtu) in str(err.value)
    assert "68-9000" in str(err.value)
    s.set_mtu("vf0", 68)
    assert s.config("vf0").mtu == 68


def test_antispoof_off_refused_by_policy(sw: ESwitch) -> None:
    sw.set_antispoof("vf0", True)
    with pytest.raises(PolicyError) as err:
        sw.set_antispoof("vf0", False)
    assert err.value.code == "EPERM"
    assert "vf0" in str(err.value)
    assert "antispoof" in str(err.value)
    assert sw.config("vf0").antispoof


def test_replace_config_is_policy_checked(sw: ESwitch) -> None:
    s = ESwitch()
    s.add_port("vf0", port_cfg(MAC0), PortPolicy(vlans=((1, 10),), mtu_max=1500))
    refused = [
        (port_cfg(MAC0, vlans=frozenset({11})), "EPERM"),
        (port_cfg(MAC1), "EPERM"),
        (port_cfg(MAC0, antispoof=False), "EPERM"),
        (port_cfg(MAC0, mtu=9000), "EINVAL"),
        (port_cfg(MAC0, default_vlan=0), "EINVAL"),
    ]
    for config, code in refused:
        with pytest.raises(PolicyError) as err:
            s.replace_config("vf0", config)
        assert err.value.code == code, config
        assert s.config("vf0") == port_cfg(MAC0)
    saved = port_cfg(MAC0, vlans=frozenset({5}), multicast=frozenset({GROUP}), promisc=True)
    s.replace_config("vf0", saved)
    assert s.config("vf0") == saved
    assert names(s.from_uplink(eth(MAC0, OTHER, vid=5))) == ["vf0"]
    assert names(s.from_uplink(eth(UNKNOWN, OTHER))) == ["vf0"]  # promisc took effect


def test_add_port_is_policy_checked() -> None:
    s = ESwitch()
    with pytest.raises(PolicyError) as err:
        s.add_port("vf0", port_cfg(MAC0, mtu=1501), PortPolicy(mtu_max=1500))
    assert err.value.code == "EINVAL"
    with pytest.raises(PolicyError) as err:
        s.add_port(UPLINK, port_cfg(MAC0), PortPolicy())
    assert err.value.code == "EINVAL"
    s.add_port("vf0", port_cfg(MAC0), PortPolicy())
    with pytest.raises(PolicyError) as err:
        s.add_port("vf0", port_cfg(MAC1), PortPolicy())
    assert err.value.code == "EEXIST"


def test_config_is_a_copy(sw: ESwitch) -> None:
    config = sw.config("vf0")
    config.promisc = True
    config.enabled = False
    assert not sw.config("vf0").promisc
    assert names(sw.from_uplink(eth(MAC0, OTHER))) == ["vf0"]
    handed = port_cfg(MAC0)
    sw.replace_config("vf0", handed)
    handed.promisc = True  # the caller's object, not the switch's
    assert sw.from_uplink(eth(UNKNOWN, OTHER)) == []


def test_unknown_port_operations_raise_enoent(sw: ESwitch) -> None:
    sw.remove_port("vf1")
    assert sw.ports() == ["vf0", "vport:g2"]
    assert names(sw.from_port("vf0", eth(MAC1, MAC0))) == [UPLINK]
    for call in (
        lambda: sw.enable("vf1"),
        lambda: sw.config("vf1"),
        lambda: sw.counters("vf1"),
        lambda: sw.remove_port("vf1"),
    ):
        with pytest.raises(PolicyError) as err:
            call()
        assert err.value.code == "ENOENT"


# -- counters -------------------------------------------------------------------


def test_counters_count_frames_and_bytes_as_sent_and_delivered(sw: ESwitch) -> None:
    sw.set_default_vlan("vf1", 20)
    frame = eth(BROADCAST, MAC0, 100)  # 114 bytes
    sw.from_port("vf0", frame)
    sw.from_uplink(eth(MAC1, OTHER, 100, vid=20))  # 118 on the wire, 114 delivered
    c0, c1, cu = sw.counters("vf0"), sw.counters("vf1"), sw.counters(UPLINK)
    assert (c0["tx_packets"], c0["tx_bytes"], c0["rx_packets"]) == (1, 114, 0)
    assert (c1["rx_packets"], c1["rx_bytes"], c1["tx_packets"]) == (1, 114, 0)
    assert (cu["tx_packets"], cu["tx_bytes"]) == (1, 114)
    assert (cu["rx_packets"], cu["rx_bytes"]) == (1, 118)
    assert sw.counters("vport:g2")["rx_packets"] == 1
    assert {"drop_" + r for r in DROP_REASONS} <= set(c0)


def test_tag_insert_counts_tagged_length_on_uplink(sw: ESwitch) -> None:
    sw.set_default_vlan("vf0", 20)
    sw.from_port("vf0", eth(UNKNOWN, MAC0, 100))
    assert sw.counters("vf0")["tx_bytes"] == 114
    assert sw.counters(UPLINK)["tx_bytes"] == 118


def test_read_deltas_returns_change_since_previous_read(sw: ESwitch) -> None:
    sw.from_port("vf0", eth(MAC1, MAC0))
    sw.from_port("vf0", eth(MAC1, OTHER))
    first = sw.read_deltas("vf0")
    assert first["tx_packets"] == 1
    assert first["tx_bytes"] == 60
    assert first["drop_spoofed"] == 1
    assert set(sw.read_deltas("vf0").values()) == {0}
    sw.from_port("vf0", eth(MAC1, MAC0))
    assert sw.read_deltas("vf0")["tx_packets"] == 1
    assert sw.counters("vf0")["tx_packets"] == 2  # totals unaffected by reads
    assert sw.read_deltas("vf1")["rx_packets"] == 2  # per-port baselines
    sw.from_uplink(eth(MAC1, OTHER))
    assert sw.read_deltas(UPLINK)["rx_packets"] == 1
    assert set(sw.read_deltas(UPLINK).values()) == {0}


def test_removed_port_comes_back_with_fresh_counters(sw: ESwitch) -> None:
    sw.from_port("vf1", eth(MAC0, MAC1))
    sw.remove_port("vf1")
    sw.add_port("vf1", port_cfg(MAC1), PortPolicy())
    assert sw.counters("vf1")["tx_packets"] == 0


# -- benchmark (not a test) ---------------------------------------------------------


def bench_forwarding(n: int) -> float:
    """Frames per second through a 9-port switch on a realistic mix; run by hand."""
    s = ESwitch()
    macs = [bytes.fromhex(f"0200000000{i:02x}") for i in range(8)]
    for i, mac in enumerate(macs):
        s.add_port(f"vf{i}", port_cfg(mac, vlans=frozenset({10})), PortPolicy())
    s.set_default_vlan("vf7", 10)
    mix: list[tuple[str | None, bytes]] = [
        ("vf0", eth(macs[1], macs[0], 1000)),  # port to port
        ("vf2", eth(OTHER, macs[2], 1400)),  # to the wire
        ("vf7", eth(OTHER, macs[7], 1400)),  # port VLAN insert
        (None, eth(macs[3], OTHER, 1400)),  # from the wire
        (None, eth(macs[7], OTHER, 1400, vid=10)),  # from the wire, tag stripped
        ("vf4", eth(macs[5], macs[4], 64, vid=10)),  # tagged port to port
        (None, eth(BROADCAST, OTHER, 46)),  # ARP-like flood
    ]
    from_port, from_uplink = s.from_port, s.from_uplink
    frames = (mix * (n // len(mix) + 1))[:n]
    start = time.perf_counter()
    for port, frame in frames:
        if port is None:
            from_uplink(frame)
        else:
            from_port(port, frame)
    return n / (time.perf_counter() - start)


if __name__ == "__main__":
    print(f"{bench_forwarding(700_000):,.0f} frames/s")
