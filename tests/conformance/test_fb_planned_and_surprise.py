"""Fallback to emulation without migration, and back: catalogue FB-01, FB-02, FB-05.

A planned switch round trip (FB-01), a surprise VF removal and the return after the
VF is restored (FB-02), a plugin reload (FB-05); each under traffic both ways
(``fallback_kit``: the schedule, the fixtures ``guest`` and ``undo``, reaching the
devices).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.lab import Lab
from bench.report.traffic_timeline import EventLog, device_events, timeline_from_traffic
from tests.conformance import kit
from tests.conformance.fallback_kit import (
    HOLD_S,
    PPS,
    UndoList,
    assert_exact,
    assert_gap_below_blackout,
    back_to_passthrough,
    counters,
    grown,
    guest_fixture,  # noqa: F401  (the fixture "guest")
    handover_s,
    nic,
    shell,
    short_traffic,
    under_traffic,
    undo_fixture,  # noqa: F401  (the fixture "undo")
    vfs_of,
    vmx,
)


def last_entry(lab: Lab, guest: str) -> dict[str, Any] | None:
    history: list[dict[str, Any]] = kit.status(lab, guest)["history"]
    return history[-1] if history else None


def wait_sequence(
    lab: Lab, guest: str, name: str, after: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    """Wait until the device recorded a new sequence ``name`` (not ``after``) and is idle."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = kit.status(lab, guest)
        tail = seen["history"][-1] if seen["history"] else None
        if tail is not None and not seen["busy"] and tail != after and tail["sequence"] == name:
            entry: dict[str, Any] = tail
            return entry
        time.sleep(0.02)
    raise AssertionError(f"guest {guest}: no {name!r} within {timeout} s; last status: {seen}")


# -- FB-01 -------------------------------------------------------------------------------


@pytest.mark.catalogue("FB-01")
@pytest.mark.requires("guests", "nic:sriov")
def test_planned_switch_round_trip_loses_nothing_and_keeps_the_netdev(
    lab: Lab,
    guest: str,
    undo: UndoList,
    record_timeline: Callable[[dict[str, Any]], Path],
    step: Callable[[str], None],
) -> None:
    """Steps: under traffic both ways, switch the guest passthrough -> emulation, keep it
    there for a while, switch it back to passthrough.
    Verify: every frame arrives once, in order, intact; the longest gap stays below
    ``blackout_ms``; emulation carried both directions in between and the VF after; the
    guest's netdev (ifindex, name), MAC and IP are the same before, during and after.
    Report: a timeline of both directions with the bench's and the device's events."""
    undo("switch back to passthrough", back_to_passthrough(lab, guest))
    netdev = kit.netdev(lab, guest)
    noted = EventLog(echo=step)

    def round_trip() -> dict[str, Any]:
        noted.note("switch to emulation requested")
        down = kit.switch(lab, guest, "emulation")
        noted.note(f"emulation reached ({down['took_ms']:.1f} ms)")
        start = counters(lab, guest)
        time.sleep(HOLD_S)  # the schedule: traffic runs on emulation
        during = kit.netdev(lab, guest)
        noted.note("switch to passthrough requested")
        up = kit.switch(lab, guest, "passthrough")
        noted.note(f"passthrough reached ({up['took_ms']:.1f} ms)")
        back = counters(lab, guest)
        time.sleep(HOLD_S)  # the schedule: traffic runs on the VF again
        emulation, passthrough = grown(start, back), grown(back, counters(lab, guest))
        return {"modes": (down["mode"], up["mode"]), "netdev": during, "emu": emulation,
                "vf": passthrough, "took_ms": (down["took_ms"], up["took_ms"])}  # fmt: skip

    since = time.time()
    results, seen = under_traffic(lab, guest, round_trip)
    device_log = vmx(lab, guest, "events")["events"]
    took_down, took_up = seen["took_ms"]
    record_timeline(
        timeline_from_traffic(
            results,
            title=f"FB-01 planned switch round trip of {guest}",
            kind="fallback",
            events=[*noted.events, *device_events(device_log, since, time.time())],
            figures={"switch to emulation ms": took_down, "switch to passthrough ms": took_up},
        )
    )

    assert seen["modes"] == ("emulation", "passthrough"), seen
    assert seen["emu"]["emu_rx_packets"] > 0 and seen["emu"]["emu_tx_packets"] > 0, (
        f"emulation carried no traffic between the switches: {seen['emu']}"
    )
    assert seen["vf"]["vf_rx_packets"] > 0 and seen["vf"]["vf_tx_packets"] > 0, (
        f"the VF carried no traffic after the return: {seen['vf']}"
    )
    assert seen["netdev"] == netdev, f"netdev in emulation {seen['netdev']} != before {netdev}"
    assert kit.netdev(lab, guest) == netdev, "the guest's netdev, MAC or IP changed"
    assert_gap_below_blackout(lab, results, "planned switch round trip")
    assert_exact(results, "planned switch round trip")


# -- FB-02 -------------------------------------------------------------------------------


@pytest.mark.catalogue("FB-02")
@pytest.mark.requires("guests", "nic:sriov")
def test_surprise_vf_removal_falls_back_with_bounded_loss_and_returns(
    lab: Lab, guest: str, undo: UndoList
) -> None:
    """Steps: under traffic both ways, remove the guest's VF without a quiesce handshake
    (VF_REMOVE); keep the traffic running; then bring the VF back (VF_RESTORE).
    Verify: the device reports the removal as its reason and took no quiesce step; no
    frame is duplicated, reordered or corrupted; the longest gap stays below
    ``blackout_ms`` and no more frames are lost than fit in it; frames sent after the
    removal arrive over emulation, up to the last one; after VF_RESTORE the guest
    returns to passthrough by itself and the VF carries its traffic exactly."""
    limits = lab.topology.limits
    vf = kit.status(lab, guest)["vf"]
    assert vf is not None, "the guest is in passthrough, it must hold a VF"

    def restore_if_absent() -> None:
        if [v for v in vfs_of(lab, guest) if v["vf"] == vf and v["state"] == "absent"]:
            nic(lab, guest, "VF_RESTORE", vf=vf)

    def remove() -> dict[str, Any]:
        undo(f"restore VF {vf}", restore_if_absent)
        nic(lab, guest, "VF_REMOVE", vf=vf)
        fallen = kit.wait_mode(lab, guest, "emulation", timeout=handover_s(lab))
        start = counters(lab, guest)
        time.sleep(HOLD_S)  # the schedule: traffic runs on emulation
        return {"status": fallen, "emu": grown(start, counters(lab, guest))}

    results, seen = under_traffic(lab, guest, remove)

    status = seen["status"]
    assert status["reason"] == "VF removed: surprise removal", status
    fallback = status["history"][-1]
    assert fallback["sequence"] == "fallback" and fallback["error"] is None, fallback
    assert "VF_QUIESCE" not in fallback["steps"], f"a surprise removal has no quiesce: {fallback}"
    assert [v["state"] for v in vfs_of(lab, guest) if v["vf"] == vf] == ["absent"]
    assert seen["emu"]["emu_rx_packets"] > 0 and seen["emu"]["emu_tx_packets"] > 0, (
        f"emulation carried no traffic after the removal: {seen['emu']}"
    )
    bound = math.ceil(PPS * float(limits.blackout_ms) / 1000) + int(limits.loss_packets)
    for r in results:
        assert (r.duplicates, r.reordered, r.corrupt) == (0, 0, 0), kit.exact(r)
        assert r.lost <= bound, f"{kit.exact(r)}; at most {bound} frames fit in blackout_ms"
        tail = r.lost - sum(b - a + 1 for a, b in r.missing)
        assert tail == 0, f"{r.name}: the last {tail} frames, sent over emulation, never came"
    assert_gap_below_blackout(lab, results, "surprise removal")

    removed = last_entry(lab, guest)
    nic(lab, guest, "VF_RESTORE", vf=vf)
    returned = wait_sequence(lab, guest, "return", removed, handover_s(lab))
    assert returned["error"] is None and returned["mode"] == "passthrough", returned
    before = counters(lab, guest)
    assert_exact(short_traffic(lab, guest), "back in passthrough after VF_RESTORE")
    back = grown(before, counters(lab, guest))
    assert back["vf_rx_packets"] > 0 and back["vf_tx_packets"] > 0, back


# -- FB-05 -------------------------------------------------------------------------------


@pytest.mark.catalogue("FB-05")
@pytest.mark.requires("guests", "nic:sriov")
def test_plugin_reload_carries_traffic_on_emulation_then_returns_to_the_vf(
    lab: Lab, guest: str, undo: UndoList
) -> None:
    """Steps: under traffic both ways, the guest reloads its plugin (the device takes it
    to emulation and back to passthrough); the traffic goes on afterwards.
    Verify: every frame arrives once, in order, intact; emulation carried frames during
    the reload; the device recorded both halves without error; afterwards the VF carries
    the traffic again and emulation none."""
    undo("switch back to passthrough", back_to_passthrough(lab, guest))
    before = last_entry(lab, guest)

    def reload() -> dict[str, Any]:
        start = counters(lab, guest)
        shell(lab, guest, "reload-plugin")
        wait_sequence(lab, guest, "reload: back to passthrough", before, handover_s(lab))
        back = counters(lab, guest)
        time.sleep(HOLD_S)  # the schedule: traffic runs on the reloaded plugin
        return {"history": kit.status(lab, guest)["history"], "reload": grown(start, back),
                "after": grown(back, counters(lab, guest))}  # fmt: skip

    results, seen = under_traffic(lab, guest, reload)

    halves = [e for e in seen["history"] if e["sequence"].startswith("reload:")][-2:]
    names = [e["sequence"] for e in halves]
    assert names == ["reload: to emulation", "reload: back to passthrough"], seen["history"]
    down, up = halves
    assert down["error"] is None and down["reason"] == "guest driver reload", down
    assert up["error"] is None and up["mode"] == "passthrough", up
    during, after = seen["reload"], seen["after"]
    assert during["emu_rx_packets"] + during["emu_tx_packets"] > 0, (
        f"no frame took emulation during the reload: {during}"
    )
    assert after["vf_rx_packets"] > 0 and after["vf_tx_packets"] > 0, after
    assert after["emu_rx_packets"] == after["emu_tx_packets"] == 0, (
        f"emulation still carries traffic after the reload: {after}"
    )
    assert_gap_below_blackout(lab, results, "plugin reload")
    assert_exact(results, "plugin reload")
