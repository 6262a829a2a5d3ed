"""Conformance on the QEMU backend where the emulated backend's tests speak to the NPA
device: DP-02, DP-07, FB-01 (with DP-10's counters), FB-02, FB-05, FB-06, and the
host-side steering.

The LM tests (``test_lm_*.py``) run on both backends as they are. These run on a
topology whose hypervisors are QEMU (``topologies/qemu-failover.yaml``) and skip,
saying so, anywhere else. Traffic to a QEMU guest is ICMP echo answered by the
guest's own kernel (one round-trip flow measures both directions); the guest's own view
comes from its serial console. Every primary hand-over is judged on the wire; frames
may be lost only inside the windows the hypervisor declares (QEMU's stop-and-copy, the
guest ejecting its primary, the guest taking it again until the bench steers to it).

FB-02 is refused here, with the reason: QEMU cannot remove a PCIe device without the
guest's eject.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.hypervisor import Hypervisor
from bench.hypervisor.qemu import QemuHypervisor
from bench.lab import Lab
from bench.migration.orchestrator import ECHO_RATE
from bench.migration.wire import wire_view
from bench.qemu.failover_image import IPROUTE2
from bench.traffic.engine import TrafficSpec, run_flows
from bench.traffic.results import DirectionResult
from bench.traffic.tcp import TcpContinuity, run_tcp_echo_probe
from tests.conformance import kit
from tests.conformance.migration_kit import leaks

pytestmark = [
    pytest.mark.requires("hypervisor:qemu", "guests", "role:traffic-generator"),
    pytest.mark.usefixtures("homecoming"),
]

PPS = 500
#: FB-06: back-to-back unplug/re-plug cycles of the primary.
STORM_CYCLES = 20


@pytest.fixture(name="qhv")
def qemu_hypervisor(hv: Hypervisor) -> QemuHypervisor:
    assert isinstance(hv, QemuHypervisor)
    return hv


@pytest.fixture(name="fo_guest")
def failover_guest(qhv: QemuHypervisor, migratable: str) -> Iterator[str]:
    """The guest under test (at home, in passthrough: ``homecoming``), steered after."""
    yield migratable
    qhv.set_steering(migratable, True)


def echo(lab: Lab, guest: str, seconds: float, pps: int = PPS) -> TrafficSpec:
    return TrafficSpec(source=kit.generator(lab), to=guest, pps=pps, duration_s=seconds)


#: Hand-overs of the primary: from the step that starts one to the event that ends it.
HAND_OVERS = (("vf-revoke", "emulation-active"), ("vf-offer", "primary-steered"))


def windows(
    hv: QemuHypervisor, guest: str, since: float, pairs: tuple[tuple[str, str], ...] = HAND_OVERS
) -> tuple[tuple[float, float], ...]:
    """Every hand-over window among ``guest``'s events since ``since`` (epoch seconds)."""
    events = [e for e in hv.events(guest) if e.t >= since]
    found = []
    for start, end in pairs:
        for begun in (e.t for e in events if e.name == start):
            ended = next((e.t for e in events if e.name == end and e.t >= begun), None)
            if ended is not None:
                found.append((begun, ended))
    return tuple(found)


def lost_outside(lab: Lab, result: DirectionResult, declared: tuple[Any, ...]) -> int:
    slack = float(lab.topology.limits.timeline_slack_ms) / 1000
    return wire_view(result, None, slack, declared).lost_outside


# -- data path ------------------------------------------------------------------


@pytest.mark.catalogue("DP-02")
def test_dp02_passthrough_traffic_exact_through_the_primary(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str
) -> None:
    """Steps: ICMP echo at the configured rate to the guest in passthrough; read the primary's
    and the standby's counters in the guest before and after. Verify: every echo answered,
    once, in order; the frames went through the primary, not the standby."""
    instance = qhv.guests.current(fo_guest)
    before = qhv.guests.net(instance)
    (result,) = run_flows(lab, [echo(lab, fo_guest, 2.0)])
    after = qhv.guests.net(instance)
    assert kit.exact(result) is None, kit.exact(result)
    assert before.primary is not None and after.primary is not None
    through_primary = after.primary.counters["rx_packets"] - before.primary.counters["rx_packets"]
    assert through_primary >= result.sent, (through_primary, result.sent)
    assert before.standby is not None and after.standby is not None
    standby_rx = after.standby.counters["rx_packets"] - before.standby.counters["rx_packets"]
    assert standby_rx < result.sent // 100, f"{standby_rx} frames came in on the standby"


# -- fallback -----------------------------------------------------------------------


@pytest.mark.catalogue("FB-01", "DP-10")
def test_fb01_planned_unplug_and_replug_under_traffic(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str, record_timeline: Callable[[dict[str, Any]], Path]
) -> None:
    """Steps: echo traffic; unplug the primary (device_del: the guest ejects it, steered to
    the standby), then plug it again (device_add: steered to it once the guest holds it).
    Verify: nothing lost outside the declared hand-over windows; blackout below
    limits.blackout_ms; the guest's netdev, MAC and IP never change; its counters only
    grow; the host steered on the guest kernel's own word (net_failover's primary
    unregistered, then registered, each before the steering it caused)."""
    before = kit.netdev(lab, fo_guest)
    counted = qhv.status(fo_guest)["counters"]
    started = time.time()

    def unplug_and_replug() -> None:
        qhv.revoke_vf(fo_guest)
        assert qhv.status(fo_guest)["mode"] == "emulation"
        qhv.offer_vf(fo_guest)

    (result,), _ = kit.traffic_during(lab, [echo(lab, fo_guest, 6.0)], unplug_and_replug)
    declared = windows(qhv, fo_guest, started)
    assert len(declared) == 2, qhv.events(fo_guest)
    order = [
        e.name
        for e in qhv.events(fo_guest)
        if e.t >= started
        and e.name
        in {"primary-unregistered", "emulation-active", "primary-registered", "primary-steered"}
    ]
    assert order == [
        "primary-unregistered",
        "emulation-active",
        "primary-registered",
        "primary-steered",
    ], order
    assert lost_outside(lab, result, declared) == 0, kit.exact(result)
    assert (result.duplicates, result.reordered) == (0, 0)
    assert result.longest_gap_ms <= lab.topology.limits.blackout_ms
    assert kit.netdev(lab, fo_guest) == before
    now = qhv.status(fo_guest)
    assert now["mode"] == "passthrough"
    assert all(now["counters"][k] >= counted[k] for k in ("rx_packets", "tx_packets")), (
        counted,
        now["counters"],
    )


@pytest.mark.catalogue("FB-02")
def test_fb02_surprise_removal_is_not_possible_under_qemu(
    qhv: QemuHypervisor, fo_guest: str
) -> None:
    """QEMU asks the guest to eject every PCIe device: the bench refuses a surprise removal
    with that reason rather than faking one."""
    with pytest.raises(Exception, match="no surprise removal"):
        qhv.revoke_vf(fo_guest, surprise=True)


@pytest.mark.catalogue("FB-01")
def test_steering_off_shows_the_net_failover_loss_and_steering_removes_it(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str
) -> None:
    """Steps: with the host bridge only learning (steering off), unplug and re-plug the
    primary under echo traffic; then the same with steering on. Verify: without steering,
    inbound frames keep reaching the standby's TAP while net_failover holds a primary and
    drops them there, until the guest happens to send on the primary (seconds, or to the
    end of the run, when nothing makes it send): more is lost than with steering, which
    loses nothing outside the declared hand-over windows."""

    def cycle() -> tuple[DirectionResult, int]:
        started = time.time()

        def unplug_and_replug() -> None:
            qhv.revoke_vf(fo_guest)
            qhv.offer_vf(fo_guest)

        (result,), _ = kit.traffic_during(lab, [echo(lab, fo_guest, 6.0, 200)], unplug_and_replug)
        return result, lost_outside(lab, result, windows(qhv, fo_guest, started))

    qhv.set_steering(fo_guest, False)
    try:
        unsteered, _ = cycle()
    finally:
        qhv.set_steering(fo_guest, True)
    steered, steered_outside = cycle()
    shown = (
        f"lost {unsteered.lost} of {unsteered.sent} without steering, "
        f"{steered.lost} of {steered.sent} with it ({steered_outside} outside the windows)"
    )
    assert unsteered.lost > steered.lost, shown
    assert steered_outside == 0, shown


@pytest.mark.catalogue("FB-05")
def test_fb05_primary_driver_reload_in_the_guest(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str
) -> None:
    """Steps: under echo traffic, unload the primary's driver in the guest (``rmmod``), then
    load it again, while the host follows the guest (``QemuHypervisor.following``).
    Verify: traffic carries on over the standby while the driver is out, then returns to
    the primary; nothing lost outside the hand-overs (from the guest's command to the
    host's steering)."""
    instance = qhv.guests.current(fo_guest)
    driver = qhv.status(fo_guest)["plugin"]
    module = qhv.guests.run(instance, f"ls /lib/modules/*/{driver}.ko").strip()
    started = time.time()
    marks: list[float] = []

    def reload() -> None:
        with qhv.following(fo_guest):
            marks.append(time.time())
            qhv.guests.run(instance, f"rmmod {driver}")
            qhv.guests.wait_primary(instance, False, time.monotonic() + 10)
            assert qhv.status(fo_guest)["mode"] == "emulation"
            marks.append(time.time())
            qhv.guests.run(instance, f"insmod {module}")
            qhv.guests.wait_mode(instance, "passthrough", time.monotonic() + 20)

    (result,), _ = kit.traffic_during(lab, [echo(lab, fo_guest, 6.0)], reload)
    pairs = (("rmmod", "emulation-active"), ("insmod", "primary-steered"))
    events = qhv.events(fo_guest)
    declared = tuple(  # from the guest's command to the host's steering that followed it
        (mark, next(e.t for e in events if e.name == end and e.t >= mark))
        for mark, (_, end) in zip(marks, pairs, strict=True)
    )
    assert all(t >= started for w in declared for t in w)
    assert lost_outside(lab, result, declared) == 0, (kit.exact(result), declared)
    assert (result.duplicates, result.reordered) == (0, 0)
    assert qhv.status(fo_guest)["mode"] == "passthrough"


@pytest.mark.catalogue("FB-06")
def test_fb06_switch_storm_keeps_the_stream_and_leaks_nothing(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str
) -> None:
    """Steps: 20 unplug/re-plug cycles of the primary back to back, under echo traffic and
    a TCP stream through the guest's echo server. Verify: the stream came back whole (same
    bytes, same hash, no reset); nothing lost outside the hand-overs; afterwards the guest
    has one master, one standby and one primary, and its host the same TAPs."""
    cycles, port = STORM_CYCLES, 5211
    qhv.start_tcp_echo(fo_guest, port)
    instance = qhv.guests.current(fo_guest)
    netdevs = len(qhv.guests.net(instance).netdevs)
    started = time.time()
    seconds = cycles * 2.0 + 2
    streams: list[TcpContinuity] = []
    address = str(lab.topology.guest(fo_guest).address.ip)

    def stream_through_the_guest() -> None:
        streams.append(
            run_tcp_echo_probe(
                lab,
                kit.generator(lab),
                address,
                duration_s=seconds,
                rate_bytes_s=ECHO_RATE,
                port=port,
            )
        )

    stream = threading.Thread(target=stream_through_the_guest, name="fb06-tcp")
    stream.start()

    def storm() -> float:
        for _ in range(cycles):
            qhv.revoke_vf(fo_guest)
            qhv.offer_vf(fo_guest)
        return time.time()

    try:
        (result,), ended = kit.traffic_during(lab, [echo(lab, fo_guest, seconds)], storm)
    finally:
        stream.join()
    assert ended < started + seconds, "the storm outlasted the traffic: raise the duration"
    (tcp,) = streams
    assert tcp.intact, tcp
    declared = windows(qhv, fo_guest, started)
    assert len(declared) == 2 * cycles, len(declared)
    assert lost_outside(lab, result, declared) == 0, kit.exact(result)
    assert (result.duplicates, result.reordered) == (0, 0)
    assert len(qhv.guests.net(instance).netdevs) == netdevs
    assert not leaks(lab)


#: DP-07: multicast groups the guest joins (more than the 32 a VF's filter table holds).
GROUPS = tuple(f"01:00:5e:00:01:{n:02x}" for n in range(1, 41))
FILTER_MTU = 1400


def filters(qhv: QemuHypervisor, guest: str) -> dict[str, Any]:
    """Per role (master, standby, primary): MTU, promiscuous flag, the groups of ours it
    listens to. What net_failover must keep identical on whichever slave carries RX."""
    instance = qhv.guests.current(guest)
    net = qhv.guests.net(instance)
    mcast = qhv.guests.run(instance, "cat /proc/net/dev_mcast")
    seen: dict[str, Any] = {}
    for role, dev in (("master", net.master), ("standby", net.standby), ("primary", net.primary)):
        if dev is None:
            continue
        flags = int(qhv.guests.run(instance, f"cat /sys/class/net/{dev.name}/flags"), 16)
        mtu = int(qhv.guests.run(instance, f"cat /sys/class/net/{dev.name}/mtu"))
        joined = {line.split()[4] for line in mcast.splitlines() if line.split()[1:2] == [dev.name]}
        ours = sorted(g for g in GROUPS if g.replace(":", "") in joined)
        seen[role] = {"mtu": mtu, "promisc": bool(flags & 0x100), "groups": len(ours)}
    return seen


@pytest.mark.catalogue("DP-07")
def test_dp07_filters_identical_in_both_modes(lab: Lab, qhv: QemuHypervisor, fo_guest: str) -> None:
    """Steps: on the guest's netdev set a smaller MTU, promiscuous mode, 40 multicast groups
    and a VLAN; unplug the primary, plug it again. Verify: before, in emulation and after,
    every slave carrying the guest (the standby, the primary there was and the new one)
    has the master's MTU and every group, and the same promiscuous state in every mode
    (net_failover keeps promiscuity on the master); the VLAN device survives."""
    instance = qhv.guests.current(fo_guest)
    master = kit.netdev(lab, fo_guest)["name"]
    ip = IPROUTE2
    setup = [
        f"{ip} link set {master} mtu {FILTER_MTU} promisc on",
        *(f"{ip} maddr add {g} dev {master}" for g in GROUPS),
        f"{ip} link add link {master} name {master}.100 type vlan id 100",
        f"{ip} link set {master}.100 up",
    ]
    undo = [
        f"{ip} link del {master}.100",
        *(f"{ip} maddr del {g} dev {master}" for g in GROUPS),
        f"{ip} link set {master} mtu {lab.topology.guest(fo_guest).mtu} promisc off",
    ]
    want = {"mtu": FILTER_MTU, "promisc": True, "groups": len(GROUPS)}
    qhv.guests.run(instance, "; ".join(setup) + "; true")
    try:
        seen = {"passthrough": filters(qhv, fo_guest)}
        qhv.revoke_vf(fo_guest)
        seen["emulation"] = filters(qhv, fo_guest)
        qhv.offer_vf(fo_guest)
        seen["passthrough again"] = filters(qhv, fo_guest)
        vlan = qhv.guests.run(instance, f"cat /sys/class/net/{master}.100/operstate").strip()
    finally:
        qhv.guests.run(instance, "; ".join(undo) + "; true")
    roles = {"passthrough": 3, "emulation": 2, "passthrough again": 3}
    for mode, by_role in seen.items():
        assert len(by_role) == roles[mode], (mode, by_role)
        assert by_role["master"] == want, (mode, by_role)
        followed = {r: {k: v for k, v in st.items() if k != "promisc"} for r, st in by_role.items()}
        wrong = {role: state for role, state in followed.items() if state != followed["master"]}
        assert not wrong, f"{mode}: {wrong} (want the master's MTU and groups on every slave)"
    # net_failover does not pass promiscuous mode on to its slaves: what matters here is
    # that each slave is the same in every mode, whichever carries the guest's traffic
    promisc = {
        (mode, role): state["promisc"]
        for mode, by_role in seen.items()
        for role, state in by_role.items()
        if role != "master"
    }
    assert len(set(promisc.values())) == 1, promisc
    assert vlan == "up"
