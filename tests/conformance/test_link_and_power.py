"""Fallback on link and power loss, made by the lab's instruments (FB-03, FB-04).

The instruments are driven exactly as in a real lab — through pyvisa by
resource string — and the topology's wiring says what they act on: an
attenuator channel on the link of a guest's NIC, a supply channel feeding a
guest's NIC. The guest's emulated path must not depend on that NIC (a vSwitch
uplink of its own), or there is nothing to fall back to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.instruments.attenuator import OpticalAttenuator
from bench.instruments.power_supply import PowerSupply
from bench.instruments.registry import open_instrument
from bench.lab import Lab
from bench.migration.wire import wire_view
from bench.topology import Instrument
from tests.conformance import kit

RATE_PPS = 2000
SECONDS = 4.0


def _wired_guest(lab: Lab, kind: str) -> tuple[Instrument, int, str] | None:
    """(instrument, channel, guest) for a ``kind`` channel acting on a guest's NIC whose
    emulated path is elsewhere (a guest with a vSwitch uplink of its own)."""
    for instrument in lab.topology.instruments:
        if instrument.kind != kind:
            continue
        for wire in instrument.wiring:
            host, part = wire.to.split("/", 1)
            for guest in lab.topology.guests:
                nic = lab.topology.guest_nic(guest)
                if guest.host != host or nic is None or guest.vswitch_uplink is None:
                    continue
                if part in (nic.name, nic.link):
                    return instrument, wire.channel, guest.name
    return None


@pytest.fixture
def attenuated(lab: Lab, artifacts: Path) -> Iterator[tuple[OpticalAttenuator, int, str]]:
    found = _wired_guest(lab, "optical-attenuator")
    if found is None:
        pytest.skip(
            "no attenuator channel sits on the link of a guest's NIC (with a vSwitch uplink)"
        )
    spec, channel, guest = found
    kit.ensure_passthrough(lab, guest)
    with open_instrument(spec.kind, lab.instrument_resource(spec.name), spec.channels,
                         expected_model=spec.model, log_path=artifacts / f"{spec.name}.log",
                         name=spec.name) as att:  # fmt: skip
        assert isinstance(att, OpticalAttenuator)
        try:
            yield att, channel, guest
        finally:
            att.set_shutter(channel, True)
    kit.ensure_passthrough(lab, guest)


@pytest.fixture
def powered(lab: Lab, artifacts: Path) -> Iterator[tuple[PowerSupply, int, str]]:
    found = _wired_guest(lab, "power-supply")
    if found is None:
        pytest.skip("no supply channel feeds the NIC of a guest (with a vSwitch uplink)")
    spec, channel, guest = found
    kit.ensure_passthrough(lab, guest)
    with open_instrument(spec.kind, lab.instrument_resource(spec.name), spec.channels,
                         expected_model=spec.model, log_path=artifacts / f"{spec.name}.log",
                         name=spec.name) as psu:  # fmt: skip
        assert isinstance(psu, PowerSupply)
        try:
            yield psu, channel, guest
        finally:
            psu.power_set(channel, True)
    kit.ensure_passthrough(lab, guest, timeout=20)


def _outage(
    lab: Lab, guest: str, cut: Callable[[], None], restore: Callable[[], None]
) -> dict[str, dict[str, Any]]:
    """Cut, see the guest in emulation, restore, see it back on its VF; when the cut was."""
    cut_from = time.time()
    cut()
    cut_to = time.time()
    during = kit.wait_mode(lab, guest, "emulation")
    restore()
    after = kit.wait_mode(lab, guest, "passthrough", timeout=20)
    return {"during": during, "after": after, "cut": {"from": cut_from, "to": cut_to}}


@pytest.mark.catalogue("FB-03")
@pytest.mark.requires("guests", "nic:sriov", "instrument:optical-attenuator")
def test_vf_link_loss_moves_the_guest_to_emulation_and_back(
    lab: Lab, attenuated: tuple[OpticalAttenuator, int, str]
) -> None:
    """Steps: traffic both ways with the guest in passthrough; the attenuator's shutter on
    its NIC's link closes, then opens. Verify: the guest moves to emulation (reason: VF
    link down) with no black hole — no frame lost, duplicated or reordered but those on the
    fibre at the instant of the cut (due within limits.timeline_slack_ms of it: a cut link
    loses what it carries, and a loaded machine holds a few frames in the kernel's queues),
    the longest gap under limits.blackout_ms — and returns to its VF when the light comes
    back."""
    att, channel, guest = attenuated
    results, seen = kit.traffic_during(
        lab,
        kit.both_ways(lab, guest, RATE_PPS, SECONDS),
        lambda: _outage(
            lab,
            guest,
            lambda: att.set_shutter(channel, False),
            lambda: att.set_shutter(channel, True),
        ),
    )
    assert seen["during"]["reason"] == "VF link down", seen["during"]
    limits = lab.topology.limits
    limit = limits.blackout_ms
    cut = (seen["cut"]["from"], seen["cut"]["to"])
    for result in results:
        view = wire_view(result, cut, float(limits.timeline_slack_ms) / 1000)
        assert (result.duplicates, result.reordered, result.corrupt) == (0, 0, 0), kit.exact(result)
        assert view.lost_outside <= limits.loss_packets, (
            f"{kit.exact(result)}; {view.lost_outside} of them not at the cut "
            f"(limit loss_packets {limits.loss_packets})"
        )
        assert result.longest_gap_ms < limit, (
            f"{result.name}: longest gap {result.longest_gap_ms:.1f} ms, limit {limit} ms"
        )


@pytest.mark.catalogue("FB-04")
@pytest.mark.requires("guests", "nic:sriov", "instrument:power-supply")
def test_nic_power_loss_moves_the_guest_to_emulation_and_back(
    lab: Lab, powered: tuple[PowerSupply, int, str]
) -> None:
    """Steps: traffic both ways with the guest in passthrough on an FPGA board; the supply
    channel feeding the board goes off, then on. Verify: the VFs vanish and the guest
    falls back (reason: NIC powered off) with loss bounded by limits.blackout_ms of
    traffic; on power-on the board re-enumerates and the guest returns to passthrough."""
    psu, channel, guest = powered
    results, seen = kit.traffic_during(
        lab,
        kit.both_ways(lab, guest, RATE_PPS, SECONDS),
        lambda: _outage(
            lab, guest, lambda: psu.power_set(channel, False), lambda: psu.power_set(channel, True)
        ),
    )
    assert "NIC powered off" in seen["during"]["reason"], seen["during"]
    with lab.guest_nic(guest) as nic:
        vfs = nic.call("STATUS")["vfs"]
    assert all(vf["state"] != "absent" for vf in vfs), f"the VFs must re-enumerate: {vfs}"
    limit = lab.topology.limits.blackout_ms
    for result in results:
        bound = RATE_PPS * limit / 1000
        assert result.lost <= bound and result.duplicates == 0, (
            f"{result.name}: {result.lost} lost (bound {bound:.0f}: {limit} ms of traffic), "
            f"{result.duplicates} duplicated"
        )
        assert result.longest_gap_ms < limit, (
            f"{result.name}: longest gap {result.longest_gap_ms:.1f} ms, limit {limit} ms"
        )
