"""Conformance on the QEMU backend: real Linux guests under net_failover (Q of the catalogue).

Runs on a topology whose hypervisors are QEMU (``topologies/qemu-failover.yaml``) and
skips, saying so, anywhere else. Traffic to a QEMU guest is ICMP echo answered by the
guest's own kernel (one round-trip flow measures both directions); the guest's own view
comes from its serial console. Every primary hand-over is judged on the wire; frames
may be lost only inside the windows the hypervisor declares (QEMU's stop-and-copy, the
guest ejecting its primary, the guest taking it again until the bench steers to it).

FB-02 skips here: QEMU cannot remove a PCIe device without the guest's eject.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.hypervisor import hypervisor_for
from bench.hypervisor.qemu import QemuHypervisor
from bench.lab import Lab
from bench.migration import Expectation, TrafficPlan, describe, migrate_under_traffic, timeline_of
from bench.migration.wire import wire_view
from bench.qemu.failover_image import EJECT_AGAIN_COMMAND, NEVER_EJECT_COMMAND, PCI_HOTPLUG_GPE
from bench.traffic.engine import TrafficSpec, run_flows
from bench.traffic.results import DirectionResult
from tests.conformance import kit

pytestmark = [
    pytest.mark.requires("hypervisor:qemu", "guests", "role:traffic-generator"),
]

PPS = 500


@pytest.fixture(name="qhv")
def qemu_hypervisor(lab: Lab) -> Iterator[QemuHypervisor]:
    hv = hypervisor_for(lab)
    assert isinstance(hv, QemuHypervisor)
    yield hv
    hv.close()


@pytest.fixture(name="fo_guest")
def failover_guest(lab: Lab, qhv: QemuHypervisor) -> Iterator[str]:
    """The first failover guest, at home and in passthrough before and after the test."""
    guests = [g.name for g in lab.topology.qemu_guests() if g.nic_mode == "failover"]
    if not guests:
        pytest.skip("no failover guest on a QEMU host")
    guest = guests[0]
    _home(lab, qhv, guest)
    yield guest
    _home(lab, qhv, guest)


def _home(lab: Lab, hv: QemuHypervisor, guest: str) -> None:
    home = lab.topology.guest(guest).host
    instance = hv.guests.current(guest)
    masked = hv.guests.run(instance, f"grep -cw masked {PCI_HOTPLUG_GPE} || true").strip()
    if masked == "1":  # a test masked the eject: unmask; a pending eject then goes ahead
        hv.guests.run(instance, EJECT_AGAIN_COMMAND)
        with contextlib.suppress(TimeoutError):
            hv.guests.wait_primary(instance, False, time.monotonic() + 3)
    hv.set_steering(guest, True)
    if instance.host != home:
        assert hv.migrate(guest, home).outcome == "completed"
    if hv.status(guest)["mode"] != "passthrough":
        hv.offer_vf(guest)
    assert hv.status(guest)["mode"] == "passthrough"


def echo(lab: Lab, guest: str, seconds: float, pps: int = PPS) -> TrafficSpec:
    return TrafficSpec(source=kit.generator(lab), to=guest, pps=pps, duration_s=seconds)


def netdev(hv: QemuHypervisor, guest: str) -> dict[str, Any]:
    """The guest's netdev as it sees it: name, MAC and IPv4 address (from its console)."""
    instance = hv.guests.current(guest)
    net = hv.guests.net(instance)
    name = (net.master or net.standby).name if (net.master or net.standby) else None
    shown = hv.guests.run(instance, f"ip -4 addr show dev {name}")
    address = next(w for line in shown.splitlines() for w in line.split()[1:2] if "inet " in line)
    mac = (net.master or net.standby).mac if (net.master or net.standby) else None
    return {"name": name, "mac": mac, "ipv4": address}


def windows(hv: QemuHypervisor, guest: str, since: float) -> tuple[tuple[float, float], ...]:
    """The hypervisor's declared windows among ``guest``'s events since ``since``."""
    events = [e for e in hv.events(guest) if e.t >= since]
    found = []
    for start, end in (("vf-revoke", "emulation-active"), ("vf-offer", "primary-steered")):
        begun = next((e.t for e in events if e.name == start), None)
        ended = next((e.t for e in events if e.name == end and begun and e.t >= begun), None)
        if begun is not None and ended is not None:
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
    grow."""
    before = netdev(qhv, fo_guest)
    counted = qhv.status(fo_guest)["counters"]
    started = time.time()

    def unplug_and_replug() -> None:
        qhv.revoke_vf(fo_guest)
        assert qhv.status(fo_guest)["mode"] == "emulation"
        qhv.offer_vf(fo_guest)

    (result,), _ = kit.traffic_during(lab, [echo(lab, fo_guest, 6.0)], unplug_and_replug)
    declared = windows(qhv, fo_guest, started)
    assert len(declared) == 2, qhv.events(fo_guest)
    assert lost_outside(lab, result, declared) == 0, kit.exact(result)
    assert (result.duplicates, result.reordered) == (0, 0)
    assert result.longest_gap_ms <= lab.topology.limits.blackout_ms
    assert netdev(qhv, fo_guest) == before
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
def test_steering_off_shows_the_net_failover_blackout_and_steering_removes_it(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str
) -> None:
    """Steps: with the host bridge only learning (steering off), unplug and re-plug the
    primary under echo traffic; then the same with steering on. Verify: without steering,
    inbound frames keep going to the standby's TAP after the primary is back and
    net_failover drops them until the guest happens to send on the primary: a blackout
    more than twice as long as with steering (and over 200 ms); with it, below
    limits.blackout_ms."""
    limit = float(lab.topology.limits.blackout_ms)

    def cycle() -> float:
        def unplug_and_replug() -> None:
            qhv.revoke_vf(fo_guest)
            qhv.offer_vf(fo_guest)

        (result,), _ = kit.traffic_during(lab, [echo(lab, fo_guest, 7.0, 200)], unplug_and_replug)
        return result.longest_gap_ms

    qhv.set_steering(fo_guest, False)
    try:
        unsteered = cycle()
    finally:
        qhv.set_steering(fo_guest, True)
    steered = cycle()
    shown = f"longest gap {unsteered:.0f} ms without steering, {steered:.0f} ms with it"
    assert unsteered > 2 * steered and unsteered > 200, shown
    assert steered <= limit, shown


# -- live migration ---------------------------------------------------------------


def _migrate(lab: Lab, hv: QemuHypervisor, guest: str, to: str, **kw: Any) -> Any:
    return migrate_under_traffic(lab, guest, to, traffic=TrafficPlan(pps=PPS), hypervisor=hv, **kw)


@pytest.mark.catalogue("LM-01", "LM-09")
def test_lm01_migrate_under_traffic_with_the_primary_back_at_the_destination(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str, record_timeline: Callable[[dict[str, Any]], Path]
) -> None:
    """Steps: migrate the guest to another QEMU host with a primary, under echo traffic.
    Verify: the timeline shows UNPLUG_PRIMARY, wait-unplug, the eject, stop-and-copy, the
    resume and the primary's return; QEMU's downtime is reported beside the wire's; loss
    only inside the declared windows; the switch learned the new port; netdev unchanged."""
    before = netdev(qhv, fo_guest)
    run = _migrate(lab, qhv, fo_guest, "hv-b")
    record_timeline(timeline_of(run))
    assert run.verdict.passed, describe(run)
    names = [e.name for e in run.result.events if e.t >= run.result.started_at]
    for step in ("unplug-primary", "wait-unplug", "emulation-active", "stop-and-copy-start",
                 "resumed", "qemu-downtime", "passthrough-active"):  # fmt: skip
        assert step in names, (step, names)
    assert names.index("emulation-active") < names.index("stop-and-copy-start")
    assert netdev(qhv, fo_guest) == before


@pytest.mark.catalogue("LM-07")
def test_lm07_ping_pong(lab: Lab, qhv: QemuHypervisor, fo_guest: str) -> None:
    """A -> B -> A: each hop meets LM-01; the guest's netdev does not drift."""
    before = netdev(qhv, fo_guest)
    for to in ("hv-b", "hv-a"):
        run = _migrate(lab, qhv, fo_guest, to)
        assert run.verdict.passed, describe(run)
    assert netdev(qhv, fo_guest) == before


@pytest.mark.catalogue("LM-03")
def test_lm03_no_primary_at_the_destination(lab: Lab, qhv: QemuHypervisor, fo_guest: str) -> None:
    """To a QEMU host with no primary to give: the guest runs on its standby, reported as
    degraded with the reason."""
    run = _migrate(lab, qhv, fo_guest, "hv-c")
    assert run.verdict.passed, describe(run)
    assert run.result.degraded and "no VF" in run.result.mode_reason
    assert qhv.status(fo_guest)["mode"] == "emulation"


@pytest.mark.catalogue("LM-04")
def test_lm04_cancel_while_waiting_for_the_eject(
    lab: Lab, qhv: QemuHypervisor, fo_guest: str
) -> None:
    """The guest is slow to eject its primary (eject masked until after the cancel); cancel
    during wait-unplug: the migration ends cancelled within the release bound and the guest
    stays on the source, its primary plugged back, passthrough."""
    qhv.guests.run(qhv.guests.current(fo_guest), NEVER_EJECT_COMMAND)

    def cancel(hv: Any) -> None:
        instance = hv.guests.current(fo_guest)
        hv.monitor(instance).wait_for({"wait-unplug"}, time.monotonic() + 30)
        hv.cancel_migration(fo_guest)
        hv.guests.run(instance, EJECT_AGAIN_COMMAND)  # the guest ejects, late

    run = _migrate(
        lab, qhv, fo_guest, "hv-b", during=cancel, expect=Expectation(outcome="cancelled")
    )
    assert run.result.outcome == "cancelled", describe(run)
    assert run.result.host == "hv-a" and run.result.mode == "passthrough"
    bound = float(lab.topology.limits.vf_release_timeout_s)
    assert run.result.finished_at - run.result.started_at < bound + 10


@pytest.mark.catalogue("LM-05")
def test_lm05_destination_fails(lab: Lab, qhv: QemuHypervisor, fo_guest: str) -> None:
    """The destination QEMU dies during the stream: the guest runs on at the source, its
    primary plugged back, passthrough."""
    run = _migrate(lab, qhv, fo_guest, "hv-b", fail_at_destination=True,
                   expect=Expectation(outcome="failed"))  # fmt: skip
    assert run.result.outcome == "failed" and "injected" in run.result.reason, describe(run)
    assert run.result.host == "hv-a" and run.result.mode == "passthrough"


@pytest.mark.catalogue("LM-06")
def test_lm06_guest_never_ejects_its_primary(lab: Lab, qhv: QemuHypervisor, fo_guest: str) -> None:
    """The guest ignores the unplug request: the migration never reaches stop-and-copy, is
    cancelled at limits.vf_release_timeout_s and the guest keeps running on the source."""
    qhv.guests.run(qhv.guests.current(fo_guest), NEVER_EJECT_COMMAND)
    run = _migrate(lab, qhv, fo_guest, "hv-b", expect=Expectation(outcome="failed"))
    assert run.result.outcome == "failed", describe(run)
    assert "vf_release_timeout_s" in run.result.reason
    names = [e.name for e in run.result.events if e.t >= run.result.started_at]
    assert "wait-unplug" in names and "stop-and-copy-start" not in names, names
    assert run.result.host == "hv-a" and run.result.mode == "passthrough"


@pytest.mark.catalogue("LM-10")
def test_lm10_guest_without_the_failover_feature(lab: Lab, qhv: QemuHypervisor) -> None:
    """A guest whose virtio NIC has no failover=on never gets a primary; it migrates in
    pure emulation."""
    plain = [g for g in lab.topology.qemu_guests() if g.nic_mode == "emulation"]
    if not plain:
        pytest.skip("no QEMU guest without the failover feature in this topology")
    guest = plain[0].name
    away = next(
        h.name for h in lab.topology.hosts if h.hypervisor == "qemu" and h.name != plain[0].host
    )
    for to in (away, plain[0].host):
        run = _migrate(lab, qhv, guest, to, expect=Expectation(passthrough_at_end=False))
        assert run.verdict.passed, describe(run)
        assert run.result.mode == "emulation" and run.result.plugin is None
        names = [e.name for e in run.result.events if e.t >= run.result.started_at]
        assert "unplug-primary" not in names and "passthrough-active" not in names
