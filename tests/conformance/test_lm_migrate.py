"""Live migration under traffic: catalogue LM-01, LM-02, LM-03, LM-09, LM-10.

Each test picks a destination by what it offers (``migration_kit.destination``),
migrates the guest under sequenced traffic both ways through the orchestrator and
reads its verdict: loss only inside the measured downtime, the lab switch learning
the guest's new port, passthrough (or degraded, with the reason) at the end.
"""

from __future__ import annotations

import pytest

from bench.hypervisor import Hypervisor
from bench.lab import Lab
from bench.migration import Expectation, migrate_under_traffic
from tests.conformance import kit
from tests.conformance.migration_kit import (
    Judge,
    destination,
    plan,
    port_state,
)

pytestmark = [
    pytest.mark.requires("guests", "role:traffic-generator"),
    pytest.mark.usefixtures("homecoming"),
]


@pytest.mark.catalogue("LM-01")
def test_lm_01_same_vendor(judged: Judge, lab: Lab, migratable: str) -> None:
    """Steps: migrate the guest under traffic to a host whose NIC is of the same vendor.
    Verify: passthrough -> emulation before stop-and-copy -> passthrough at the destination;
    loss only inside the downtime; the switch learned the new port; netdev, MAC, IP unchanged."""
    target = destination(lab, migratable, vendor="same")
    before = kit.netdev(lab, migratable)
    run = migrate_under_traffic(lab, migratable, target, traffic=plan())
    judged(run)
    names = [e.name for e in run.result.events if e.t >= run.result.started_at]
    order = ["emulation-active", "stop-and-copy-start", "resumed", "announce-sent"]
    assert [n for n in names if n in order] == order, names
    assert names.index("passthrough-active", names.index("resumed")) > names.index("resumed")
    assert kit.netdev(lab, migratable) == before


@pytest.mark.catalogue("LM-02")
def test_lm_02_other_vendor_replays_state(judged: Judge, lab: Lab, migratable: str) -> None:
    """Steps: join multicast groups, a VLAN and a smaller MTU; migrate to another vendor.
    Verify: the destination's plugin is loaded; the port state (MTU, VLANs, multicast,
    MAC) is the same on the new NIC; the guest's counters only grew; the verdict passes."""
    target = destination(lab, migratable, vendor="other")
    groups = [f"01:00:5e:00:00:{n:02x}" for n in range(1, 4)]
    with lab.guest_control(migratable) as device:
        device.call("filter", set="multicast", macs=groups)
        device.call("filter", set="add_vlans", lo=100, hi=101)
        device.call("filter", set="mtu", mtu=1400)
    try:
        found = port_state(lab, migratable)
        counted = kit.driver_status(lab, migratable)["counters"]
        plugin = kit.status(lab, migratable)["plugin"]
        run = migrate_under_traffic(lab, migratable, target, traffic=plan())
        judged(run)
        assert run.result.plugin not in (None, plugin), (plugin, run.result.plugin)
        assert port_state(lab, migratable) == found
        now = kit.driver_status(lab, migratable)["counters"]
        shrunk = {k: (counted[k], now[k]) for k in counted if now[k] < counted[k]}
        assert not shrunk, f"guest counters went backwards across the migration: {shrunk}"
        arrived = sum(t.unique for t in run.traffic if t.name.endswith(migratable))
        assert now["rx_packets"] - counted["rx_packets"] >= arrived
    finally:
        with lab.guest_control(migratable) as device:
            device.call("filter", set="multicast", macs=[])
            device.call("filter", set="del_vlans", lo=100, hi=101)
            device.call("filter", set="mtu", mtu=lab.topology.guest(migratable).mtu)


@pytest.mark.catalogue("LM-03")
def test_lm_03_no_vf_at_destination(judged: Judge, lab: Lab, migratable: str) -> None:
    """Steps: migrate under traffic to a host with no VF for the guest.
    Verify: the guest runs on there in emulation, healthy (loss only inside the downtime),
    reported as degraded with the reason."""
    target = destination(lab, migratable, vf=False)
    run = migrate_under_traffic(
        lab, migratable, target, traffic=plan(), expect=Expectation(passthrough_at_end=False)
    )
    judged(run)
    assert run.result.degraded and run.result.mode_reason
    status = kit.status(lab, migratable)
    assert (status["mode"], status["reason"]) == ("emulation", run.result.mode_reason)


@pytest.mark.catalogue("LM-09")
def test_lm_09_tcp_connection_survives(judged: Judge, lab: Lab, migratable: str) -> None:
    """Steps: an established TCP stream into the guest while it migrates (with UDP both ways).
    Verify: the same bytes arrive, hashed identically at both ends, on the same connection."""
    target = destination(lab, migratable)
    run = migrate_under_traffic(lab, migratable, target, traffic=plan(tcp=True))
    assert run.tcp is not None
    judged(run)


@pytest.mark.catalogue("LM-10")
def test_lm_10_guest_without_plugin_support(judged: Judge, lab: Lab, hv: Hypervisor) -> None:
    """Steps: migrate under traffic a guest that has no plugin support.
    Verify: no VF is ever offered to it; the migration works in pure emulation."""
    plain = [g.name for g in lab.topology.guests if g.nic_mode == "emulation"]
    if not plain:
        pytest.skip("no guest with nic_mode: emulation in this topology")
    guest = plain[0]
    target = _any_other(lab, guest)
    run = migrate_under_traffic(
        lab, guest, target, traffic=plan(), expect=Expectation(passthrough_at_end=False)
    )
    judged(run)
    offers = ("vf-acquired", "plugin-loaded", "failover-negotiated", "passthrough-active")
    offered = [e for e in hv.events(guest) if e.name in offers]
    assert not offered, f"{guest} was offered a VF: {offered}"


def _any_other(lab: Lab, guest: str) -> str:
    here = lab.guest_host(guest)
    for host in lab.topology.hosts:
        if host.role == "hypervisor" and host.name != here:
            return host.name
    pytest.skip("no second hypervisor to migrate to")
