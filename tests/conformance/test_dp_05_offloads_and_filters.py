"""Conformance DP-05, DP-07, DP-08 and DP-09: what the guest's port lets through, in both
modes.

DP-05: VLAN-tagged frames (and checksum/TSO offload) are the same in passthrough and in
emulation. DP-07: multicast, VLAN, promiscuous and MTU filters behave the same in both
modes and across switches. DP-08: requests the port policy forbids are refused. DP-09:
frames with a forged source MAC are dropped, counted and seen by no one. Every test
sends hand-made frames (``data_path_probes``); fixtures: ``conftest.py``. The PF side of
DP-07/08/09 (the VF settings an administrator applies, on the emulated NIC and on a real
kernel's SR-IOV alike) is ``test_dp_07_09_pf_control.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scapy.utils import RawPcapReader

from bench.lab import Lab
from bench.traffic import wire
from bench.traffic.capture import capture
from nic_emulators.control import ControlError
from tests.conformance import kit
from tests.conformance.data_path_kit import (
    Cleanup,
    device_call,
    filters,
    nic_call,
    port_config,
    port_of,
    put_in,
)
from tests.conformance.data_path_probes import (
    FrameMaker,
    Probe,
    arrivals,
    data_address,
    send_probes,
)

MODES = ("passthrough", "emulation")
#: Multicast groups (IPv4-mapped MACs): two the guest joins, one it never joins.
JOINED_GROUPS = ("01:00:5e:4e:50:01", "01:00:5e:4e:50:02")
OTHER_GROUP = "01:00:5e:4e:50:63"
UNKNOWN_UNICAST = "02:4e:50:00:0f:0f"
FORGED_MAC = "02:4e:50:00:0f:99"
BROADCAST = "ff:ff:ff:ff:ff:ff"


# -- DP-05 -------------------------------------------------------------------------------


def allowed_vlans(lab: Lab, guest: str) -> list[int]:
    """VLAN ids the guest's port policy allows, ascending."""
    ranges = lab.topology.guest(guest).policy.vlan_ranges()
    return [vid for vid in range(1, 4095) if any(lo <= vid <= hi for lo, hi in ranges)]


def joinable_vlan(lab: Lab, guest: str) -> int:
    allowed = allowed_vlans(lab, guest)
    if not allowed:
        pytest.skip(f"{guest}'s port policy allows untagged frames only")
    return 100 if 100 in allowed else allowed[0]


def blank_stamp(frame: bytes, payload_at: int) -> bytes:
    """``frame`` with the bytes the generator changes per frame (seq, time, check) zeroed."""
    start, end = payload_at + wire.SEQ_OFFSET, payload_at + wire.HEADER_LEN
    return frame[:start] + bytes(end - start) + frame[end:]


def captured(pcap: Path, flow: int) -> list[bytes]:
    """Every frame of ``flow`` in an Ethernet capture (802.1Q tags as on the wire), blanked."""
    frames = []
    for data, _ in RawPcapReader(str(pcap)):
        frame = bytes(data)
        at = 46 if frame[12:14] == b"\x81\x00" else 42  # IPv4 without options, UDP
        stamp = wire.read_stamp(frame, at)
        if stamp is not None and stamp.flow == flow:
            frames.append(blank_stamp(frame, at))
    return frames


@pytest.mark.catalogue("DP-05")
@pytest.mark.requires("guests", "nic:sriov")
@pytest.mark.parametrize("priority", [0, 5], ids=["pcp0", "pcp5"])
def test_dp05_vlan_tagged_frames_are_the_same_in_both_modes(
    lab: Lab, guest: str, cleanup: Cleanup, artifacts: Path, priority: int
) -> None:
    """Steps: the guest joins a VLAN; in passthrough, then in emulation, the generator sends
    it tagged frames (802.1Q priority ``priority``) and it sends tagged frames back, each
    side capturing. Verify: every frame arrives exactly once, in order, both ways; every
    captured frame is the frame that was sent, tag included (the VF strips the tag and the
    shell puts it back in passthrough; emulation leaves it in place)."""
    gen = kit.generator(lab)
    vid = joinable_vlan(lab, guest)
    filters(lab, guest, cleanup)("add_vlans", lo=vid, hi=vid)
    maker = FrameMaker(lab)
    inbound, outbound = (
        maker.probe(
            f"VLAN {vid} {src} -> {dst}", src, dst, 0, vlan=vid, priority=priority, count=100
        )
        for src, dst in ((gen, guest), (guest, gen))
    )
    # One capture on each side for the whole test; each mode's frames are flows of their own.
    probes = {
        mode: (inbound.as_flow(51 + 2 * i), outbound.as_flow(52 + 2 * i))
        for i, mode in enumerate(MODES)
    }
    at_guest, at_gen = artifacts / f"{guest}.pcap", artifacts / f"{gen}.pcap"
    wrong: list[str] = []
    with (
        capture(lab, guest, data_address(lab, guest)[0], at_guest),
        capture(lab, gen, data_address(lab, gen)[0], at_gen),
    ):
        for mode, (to_guest, from_guest) in probes.items():
            put_in(lab, guest, mode)
            seen = send_probes(lab, [to_guest, from_guest], [guest, gen])
            wrong += arrivals(seen, [(to_guest, guest, True), (from_guest, gen, True)], mode)
    assert not wrong, "\n".join(wrong)
    changed: list[tuple[str, Probe, bytes, bytes]] = []
    for mode, pair in probes.items():
        for probe, pcap in zip(pair, (at_guest, at_gen), strict=True):
            sent = blank_stamp(probe.template.frame, probe.template.payload_at)
            frames = captured(pcap, probe.flow)
            assert len(frames) == probe.count, f"{mode}: {len(frames)} of {probe.name} in {pcap}"
            changed += [(mode, probe, sent, f) for f in dict.fromkeys(frames) if f != sent]
    if not changed:
        return
    shown = "\n".join(
        f"{mode}: {probe.name}: sent {sent[12:18].hex()}..., captured {frame[12:18].hex()}..."
        " (type + tag)"
        for mode, probe, sent, frame in changed
    )
    pytest.fail(f"frames differ from what was sent (artifacts: {artifacts}):\n{shown}")


@pytest.mark.catalogue("DP-05")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp05_checksum_and_tso_offload_parity(lab: Lab, guest: str) -> None:
    """Steps: look at the guest's netdev. Verify: checksum and TSO offload parity needs a
    guest that asks for them, which only a TAP with a virtio-net header can."""
    out = lab.host(guest).run(f"ip -d -j link show dev {data_address(lab, guest)[0]}", timeout=10)
    assert out.exit_status == 0, out.stderr
    info = json.loads(out.stdout)[0].get("linkinfo", {}).get("info_data", {})
    if not info.get("vnet_hdr"):
        pytest.skip(
            f"{guest}'s TAP has no virtio-net header (IFF_VNET_HDR off), so the guest never "
            "asks for checksum or TSO offload; parity of those needs IFF_VNET_HDR in the shell"
        )
    pytest.skip("the shell's TAP has IFF_VNET_HDR, but this check is not written yet")


# -- DP-07 -------------------------------------------------------------------------------


#: The MTU DP-07 gives the guest's port (below the guest's netdev MTU, so it can exceed it).
SMALL_MTU = 1000


@pytest.mark.catalogue("DP-07")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp07_filters_behave_the_same_in_both_modes_and_across_switches(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: the guest joins two multicast groups and a VLAN; the generator sends it
    unicast, both kinds of multicast, broadcast, a joined and a not joined VLAN and unknown
    unicast, in passthrough, in emulation and in passthrough again. Then the guest joins
    33 groups (more than a VF's filter holds), goes promiscuous and lowers its port MTU;
    the same in both modes, plus frames from the guest at and above that MTU. Verify:
    exactly the same frames reach (all of them) or miss (none of them) the guest's netdev
    and the generator each time; the VF's port configuration is the vport's; frames above
    the MTU are counted as dropped on the port in use."""
    gen = kit.generator(lab)
    vid = joinable_vlan(lab, guest)
    others = [v for v in allowed_vlans(lab, guest) if v != vid]
    set_filter = filters(lab, guest, cleanup)
    set_filter("multicast", macs=list(JOINED_GROUPS))
    set_filter("add_vlans", lo=vid, hi=vid)
    maker = FrameMaker(lab)
    to_guest: list[tuple[Probe, bool]] = [
        (maker.probe("unicast to the guest", gen, guest, 61), True),
        (maker.probe("joined group", gen, guest, 62, dst_mac=JOINED_GROUPS[0]), True),
        (maker.probe("group not joined", gen, guest, 63, dst_mac=OTHER_GROUP), False),
        (maker.probe("broadcast", gen, guest, 64, dst_mac=BROADCAST), True),
        (maker.probe(f"joined VLAN {vid}", gen, guest, 65, vlan=vid), True),
        (maker.probe("unknown unicast", gen, guest, 67, dst_mac=UNKNOWN_UNICAST), False),
    ]
    if others:
        to_guest.append((maker.probe(f"VLAN {others[0]}", gen, guest, 66, vlan=others[0]), False))
    wrong: list[str] = []

    def same_config(status: dict[str, Any], when: str) -> None:
        if status["mode"] == "passthrough":
            vport, vf = port_config(lab, guest), port_config(lab, guest, port_of(status))
            if vport != vf:
                wrong.append(f"{when}: VF port {vf} differs from the vport {vport}")

    for when in ("passthrough", "emulation", "passthrough"):
        status = put_in(lab, guest, when)
        same_config(status, when)
        seen = send_probes(lab, [p for p, _ in to_guest], [guest])
        wrong += arrivals(seen, [(p, guest, want) for p, want in to_guest], when)
    many = [*JOINED_GROUPS, *(f"01:00:5e:4e:51:{i:02x}" for i in range(31))]
    set_filter("multicast", macs=many)
    set_filter("rx_mode", promisc=True, allmulti=False)
    set_filter("mtu", mtu=SMALL_MTU)
    fits = maker.probe(f"{SMALL_MTU}-byte payload", guest, gen, 68, size=SMALL_MTU + 14)
    too_big = maker.probe(f"{SMALL_MTU + 1}-byte payload", guest, gen, 69, size=SMALL_MTU + 15)
    expected = [(p, guest, True) for p, _ in to_guest if p.flow in (63, 67)]
    expected += [(fits, gen, True), (too_big, gen, False)]
    for when in MODES:
        status = put_in(lab, guest, when)
        same_config(status, f"{len(many)} groups, {when}")
        config = port_config(lab, guest, port_of(status))
        if (config["allmulti"], config["promisc"], config["mtu"]) != (True, True, SMALL_MTU):
            wrong.append(f"{len(many)} groups, {when}: port {port_of(status)} is {config}")
        before = nic_call(lab, guest, "PORT_COUNTERS", port=port_of(status))
        seen = send_probes(lab, [p for p, _, _ in expected], [guest, gen])
        wrong += arrivals(seen, expected, f"{len(many)} groups, promiscuous, {when}")
        after = nic_call(lab, guest, "PORT_COUNTERS", port=port_of(status))
        if after["drop_mtu"] - before["drop_mtu"] != too_big.count:
            wrong.append(f"{when}: {after['drop_mtu'] - before['drop_mtu']} MTU drops counted")
    assert not wrong, "\n".join(wrong)


# -- DP-08 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-08")
@pytest.mark.requires("guests", "nic:sriov")
def test_dp08_requests_the_port_policy_forbids_are_refused_in_both_modes(
    lab: Lab, guest: str, cleanup: Cleanup
) -> None:
    """Steps: in passthrough, then in emulation, the guest's driver asks for what its port
    policy forbids: another MAC, a VLAN and a port VLAN outside the allowed ranges. Verify:
    each is refused with EPERM and a message naming the port and the policy; the guest's
    port configuration (and its VF's) is unchanged."""
    policy = lab.topology.guest(guest).policy
    allowed = set(allowed_vlans(lab, guest))
    outside = next((vid for vid in range(1, 4095) if vid not in allowed), None)
    requests: list[tuple[dict[str, Any], str]] = []
    if not policy.mac_change:
        requests.append(({"set": "mac", "mac": FORGED_MAC}, "policy forbids MAC changes"))
    if outside is not None:
        requests.append(({"set": "add_vlans", "lo": outside, "hi": outside}, "policy allows VLANs"))
        requests.append(({"set": "default_vlan", "vlan": outside}, "policy allows VLANs"))
    if not requests:
        pytest.skip(f"{guest}'s port policy allows MAC changes and every VLAN")
    filters(lab, guest, cleanup)  # should a request pass, the filters are put back
    wrong = []
    for mode in MODES:
        status = put_in(lab, guest, mode)
        ports = [f"vport:{guest}"] + ([port_of(status)] if mode == "passthrough" else [])
        before = {port: port_config(lab, guest, port) for port in ports}
        for request, reason in requests:
            try:
                device_call(lab, guest, "filter", **request)
            except ControlError as err:
                text = str(err)
                if err.code != "EPERM" or f"port vport:{guest}" not in text or reason not in text:
                    wrong.append(f"{mode}: {request} refused as {err.code} {text!r}")
            else:
                wrong.append(f"{mode}: {request} was accepted")
        after = {port: port_config(lab, guest, port) for port in ports}
        if after != before:
            wrong.append(f"{mode}: the ports changed: {before} -> {after}")
    assert not wrong, "\n".join(wrong)


# -- DP-09 -------------------------------------------------------------------------------


@pytest.mark.catalogue("DP-09")
@pytest.mark.requires("guests:2", "nic:sriov")
def test_dp09_forged_source_macs_are_dropped_counted_and_seen_by_no_one(
    lab: Lab, guest: str, neighbour: str, cleanup: Cleanup
) -> None:
    """Steps: in passthrough, then in emulation, the guest sends frames with a forged source
    MAC, to the generator and to broadcast, and the same frames with its own MAC; the
    generator and a neighbour guest on the same NIC listen. Verify: no forged frame reaches
    either; the guest's switch port in use counts every one as spoofed; the frames with the
    guest's own MAC all arrive."""
    if not lab.topology.guest(guest).policy.antispoof:
        pytest.skip(f"{guest}'s port policy does not require anti-spoofing")
    gen = kit.generator(lab)
    maker = FrameMaker(lab)
    forged = maker.probe("forged source to the generator", guest, gen, 71, src_mac=FORGED_MAC)
    forged_bc = maker.probe(
        "forged source, broadcast", guest, gen, 72, src_mac=FORGED_MAC, dst_mac=BROADCAST
    )
    real = maker.probe("own source to the generator", guest, gen, 73)
    real_bc = maker.probe("own source, broadcast", guest, gen, 74, dst_mac=BROADCAST)
    expected = [
        (forged, gen, False),
        (forged_bc, gen, False),
        (forged_bc, neighbour, False),
        (real, gen, True),
        (real_bc, gen, True),
        (real_bc, neighbour, True),
    ]
    wrong = []
    for mode in MODES:
        status = put_in(lab, guest, mode)
        port = port_of(status)
        before = nic_call(lab, guest, "PORT_COUNTERS", port=port)
        seen = send_probes(lab, [forged, forged_bc, real, real_bc], [gen, neighbour])
        after = nic_call(lab, guest, "PORT_COUNTERS", port=port)
        wrong += arrivals(seen, expected, mode)
        spoofed = after["drop_spoofed"] - before["drop_spoofed"]
        if spoofed != forged.count + forged_bc.count:
            wrong.append(f"{mode}: port {port} counted {spoofed} spoofed frames")
    assert kit.status(lab, neighbour)["mode"] == "passthrough"
    assert not wrong, "\n".join(wrong)
