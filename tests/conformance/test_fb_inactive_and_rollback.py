"""Fallback to emulation without migration, when passthrough cannot be had: FB-07, FB-08.

FB-07: each reason passthrough is inactive keeps the guest working in emulation.
FB-08: a failure at each step of the switch to passthrough is rolled back, and a
retry succeeds. Both under traffic both ways (``fallback_kit``: the schedule, the
fixtures ``guest`` and ``undo``, reaching the devices).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bench.lab import Lab
from nic_emulators.control import ControlError
from tests.conformance import kit
from tests.conformance.fallback_kit import (
    HOLD_S,
    PPS,
    SHORT_SECONDS,
    Undo,
    UndoList,
    assert_exact,
    assert_gap_below_blackout,
    back_to_passthrough,
    counters,
    grown,
    guest_fixture,  # noqa: F401  (the fixture "guest")
    handover_s,
    nic,
    nic_snapshot,
    shell,
    short_traffic,
    under_traffic,
    undo_fixture,  # noqa: F401  (the fixture "undo")
    vfs_of,
    vmx,
)

#: Owner name under which FB-08 takes the free VFs away from the guest.
VF_TAKER = "fb-08 (every free VF taken)"


# -- FB-07 -------------------------------------------------------------------------------


def _suspend(lab: Lab, guest: str, undo: UndoList) -> None:
    undo("resume", lambda: vmx(lab, guest, "resume"))
    vmx(lab, guest, "suspend")


def _no_memory_reservation(lab: Lab, guest: str, undo: UndoList) -> None:
    undo("memory reservation", lambda: vmx(lab, guest, "set", memory_reserved=True))
    vmx(lab, guest, "set", memory_reserved=False)
    kit.switch(lab, guest, "emulation")


def _incompatible_features(lab: Lab, guest: str, undo: UndoList) -> None:
    """Require a feature the VF lacks; if the board offers all, offer one less (one no
    guest has enabled, so the neighbours' VFs stay valid)."""
    vfs = vfs_of(lab, guest)
    offered = set(vfs[0]["offered"])
    lacking = sorted({"csum", "vlan", "tso", "rss", "lro"} - offered)
    if not lacking:
        spare = sorted(offered - set().union(*(set(v["enabled"]) for v in vfs)))
        if not spare:
            pytest.skip(f"every feature the VFs offer is in use: {sorted(offered)}")
        lacking = spare[:1]
        undo("VF features", lambda: nic(lab, guest, "SET_VF_FEATURES", features=sorted(offered)))
        nic(lab, guest, "SET_VF_FEATURES", features=sorted(offered - set(lacking)))
    undo("required features", lambda: vmx(lab, guest, "set", required_features=[]))
    vmx(lab, guest, "set", required_features=lacking)
    kit.switch(lab, guest, "emulation")


def _out_of_vectors(lab: Lab, guest: str, undo: UndoList) -> None:
    kit.switch(lab, guest, "emulation")
    free = nic(lab, guest, "STATUS")["vectors_free"]
    undo("interrupt vectors", lambda: nic(lab, guest, "VECTORS", free=free))
    nic(lab, guest, "VECTORS", free=0)


def _runtime_error(lab: Lab, guest: str, undo: UndoList) -> None:
    """The plugin stops completing; the guest's frames make the shell's TX watchdog fire."""
    undo("plugin fault", lambda: shell(lab, guest, "plugin-fault", fault=None))
    shell(lab, guest, "plugin-fault", fault="no-complete")
    from_guest = kit.both_ways(lab, guest, PPS, SHORT_SECONDS)[1:]
    kit.traffic_during(lab, from_guest, lambda: None)  # only a trigger: not measured
    kit.wait_mode(lab, guest, "emulation", timeout=handover_s(lab))
    shell(lab, guest, "plugin-fault", fault=None)


#: case -> (the reason the device must report, how to impose it, whether a switch to
#: passthrough must be refused while it holds: a runtime error only keeps the guest out).
INACTIVE: dict[str, tuple[str, Callable[[Lab, str, UndoList], None], bool]] = {
    "suspend": ("guest suspended", _suspend, True),
    "no-memory-reservation": ("no full memory reservation", _no_memory_reservation, True),
    "incompatible-features": ("incompatible adapter features", _incompatible_features, True),
    "out-of-vectors": ("out of interrupt vectors", _out_of_vectors, True),
    "runtime-error": ("runtime error: TX timeout", _runtime_error, False),
}


@pytest.mark.catalogue("FB-07")
@pytest.mark.requires("guests", "nic:sriov")
@pytest.mark.parametrize("case", list(INACTIVE))
def test_passthrough_inactive_reason_keeps_the_guest_working_in_emulation(
    lab: Lab, guest: str, undo: UndoList, case: str
) -> None:
    """Steps: impose the condition (suspend, no memory reservation, a required feature the
    VF lacks, no free interrupt vectors, a plugin that stops completing); ask for
    passthrough; run short traffic both ways.
    Verify: a switch to passthrough is refused naming the reason (a runtime error just
    leaves the guest in emulation); the guest is in emulation with that reason reported,
    holds no VF, and keeps working: every frame arrives exactly, over emulation, and the
    reason still stands afterwards."""
    reason, impose, refuses = INACTIVE[case]
    impose(lab, guest, undo)
    if refuses:
        with pytest.raises(ControlError, match=reason):
            kit.switch(lab, guest, "passthrough")
    status = kit.wait_mode(lab, guest, "emulation", timeout=handover_s(lab))
    assert status["reason"].startswith(reason) and status["vf"] is None, status
    if refuses:
        refusal = status["history"][-1]
        assert refusal["error"] and "shell go" not in refusal["steps"], refusal
    owned = [v for v in vfs_of(lab, guest) if v["owner"] == guest]
    assert not owned, f"in emulation ({reason}) the guest still holds {owned}"

    before = counters(lab, guest)
    results = short_traffic(lab, guest)
    assert_exact(results, f"in emulation ({reason})")
    carried, sent = grown(before, counters(lab, guest)), {r.flow: r.sent for r in results}
    assert carried["emu_rx_packets"] >= sent[1] and carried["emu_tx_packets"] >= sent[2], carried
    assert carried["vf_rx_packets"] == carried["vf_tx_packets"] == 0, carried
    after = kit.status(lab, guest)
    assert after["mode"] == "emulation" and after["reason"].startswith(reason), after


# -- FB-08 -------------------------------------------------------------------------------

#: Arms a failure on a guest in emulation; returns what lifts it before the retry.
Arm = Callable[[Lab, str, UndoList], Undo]


@dataclass(frozen=True)
class StepFailure:
    """A failure at one step of emulation -> passthrough, and the undo it must get."""

    arm: Arm
    failed_step: str  # the last forward step the device took
    rollback: tuple[str, ...]  # device steps that must follow it, in this order
    says: str  # what the failed switch's error and the reason name
    also: frozenset[str] = field(default_factory=frozenset)  # steps after it, in any order


def _injected(target: str) -> Arm:
    """The NIC fails its next ``target`` operation (INJECT), once: the failed switch spends
    the injection and the NIC disarms it by itself, so there is nothing to lift."""

    def arm(lab: Lab, guest: str, undo: UndoList) -> Undo:
        def spend() -> None:
            """INJECT has no disarm: an injection the test did not spend (it stopped before
            the switch) is spent by a call without arguments, which fails either way (the
            injection or a missing argument) and changes nothing."""
            with contextlib.suppress(ControlError):
                nic(lab, guest, target)

        undo(f"spend a leftover INJECT {target}", spend)
        nic(lab, guest, "INJECT", target=target)
        return lambda: None  # the NIC spends it on the first try

    return arm


def _no_free_vf(lab: Lab, guest: str, undo: UndoList) -> Undo:
    """Every free VF taken by another owner: VF_ACQUIRE fails, nothing to undo."""
    taken: list[int] = []

    def give_back() -> None:
        for vf in vfs_of(lab, guest):
            if vf["vf"] in taken and vf["owner"] == VF_TAKER:
                nic(lab, guest, "VF_RELEASE", vf=vf["vf"])

    undo("give the taken VFs back", give_back)
    for vf in vfs_of(lab, guest):
        if vf["state"] == "free":
            taken.append(nic(lab, guest, "VF_ACQUIRE", owner=VF_TAKER, vf=vf["vf"])["vf"])
    return give_back


def _plugin_refused(lab: Lab, guest: str, undo: UndoList) -> Undo:
    """The guest cannot load the plugin the VF names: it refuses the VF at attach, after
    VF_INIT, so the device must RELEASE it."""
    present = [v["vf"] for v in vfs_of(lab, guest) if v["state"] != "absent"]
    plugin = nic(lab, guest, "VF_GET_INFO", vf=present[0])["plugin"]

    def lift() -> None:
        shell(lab, guest, "install-plugin", name=plugin)  # no module: the override goes

    undo("remove the plugin override", lift)
    shell(lab, guest, "install-plugin", name=plugin, module="drivers.plugins.fb08_not_there")
    return lift


def _fail_after_activate(lab: Lab, guest: str, undo: UndoList) -> Undo:
    undo("fail_after_activate off", lambda: vmx(lab, guest, "set", fail_after_activate=False))
    vmx(lab, guest, "set", fail_after_activate=True)
    return lambda: None  # the device spends it on the first try


STEP_FAILURES = {
    "inject-VF_ACQUIRE": StepFailure(_injected("VF_ACQUIRE"), "VF_ACQUIRE", (), "injected"),
    "inject-VF_INIT": StepFailure(_injected("VF_INIT"), "VF_INIT", ("VF_RELEASE",), "injected"),
    "inject-VF_ACTIVATE": StepFailure(
        _injected("VF_ACTIVATE"), "VF_ACTIVATE", ("VF_QUIESCE", "VF_RELEASE"), "injected",
        frozenset({"shell detach"}),
    ),
    "VF_ACQUIRE-no-free-VF": StepFailure(_no_free_vf, "VF_ACQUIRE", (), "no free VF"),
    "attach-plugin-refused": StepFailure(
        _plugin_refused, "shell attach", ("VF_RELEASE",), "refused"
    ),
    "after-VF_ACTIVATE": StepFailure(
        _fail_after_activate, "VF_ACTIVATE", ("VF_QUIESCE", "VF_RELEASE"), "injected",
        frozenset({"shell detach"}),
    ),
}  # fmt: skip


def _in_order(wanted: tuple[str, ...], steps: list[str]) -> bool:
    remaining = iter(steps)
    return all(step in remaining for step in wanted)


@pytest.mark.catalogue("FB-08")
@pytest.mark.requires("guests", "nic:sriov")
@pytest.mark.parametrize("where", list(STEP_FAILURES))
def test_failure_at_each_switch_step_is_rolled_back_and_a_retry_succeeds(
    lab: Lab, guest: str, undo: UndoList, where: str
) -> None:
    """Steps: with the guest in emulation, arm a failure at one step of the switch to
    passthrough (INJECT VF_ACQUIRE / VF_INIT / VF_ACTIVATE on the NIC; no free VF at
    ACQUIRE; the guest refusing the VF at attach, after INIT; a failure right after
    VF_ACTIVATE); under traffic both ways, ask for passthrough, lift the failure, retry.
    Verify: the first switch fails naming the failure, also as the reason; the history
    shows the forward steps stop there and the undo follows (RELEASE after INIT; QUIESCE
    + RELEASE after ACTIVATE); the NIC's VFs and vectors are as before (no leak); the
    guest stays in emulation holding no VF, its buffers balanced; the retry reaches
    passthrough and the VF carries the traffic; every frame arrives exactly throughout."""
    failure = STEP_FAILURES[where]
    undo("switch back to passthrough", back_to_passthrough(lab, guest))
    kit.switch(lab, guest, "emulation")
    lift = failure.arm(lab, guest, undo)
    nic_before = nic_snapshot(lab, guest)

    def fail_then_retry() -> dict[str, Any]:
        try:
            kit.switch(lab, guest, "passthrough")
        except ControlError as err:
            error: str | None = str(err)
        else:
            error = None
        seen = {
            "error": error,
            "status": kit.wait_mode(lab, guest, "emulation", timeout=handover_s(lab)),
            "nic": nic_snapshot(lab, guest),
            "driver": kit.driver_status(lab, guest),
        }
        time.sleep(HOLD_S)  # the schedule: the guest keeps working in emulation
        lift()
        seen["retry"] = kit.switch(lab, guest, "passthrough")["mode"]
        start = counters(lab, guest)
        time.sleep(HOLD_S)  # the schedule: traffic runs on the VF
        seen["after"] = grown(start, counters(lab, guest))
        return seen

    results, seen = under_traffic(lab, guest, fail_then_retry)

    assert seen["error"] and failure.says in seen["error"], f"the switch did not fail: {seen}"
    status, driver = seen["status"], seen["driver"]
    assert failure.says in status["reason"], f"the reason must name the failure: {status}"
    entry = status["history"][-1]
    assert entry["sequence"] == "switch to passthrough" and entry["error"], entry
    steps = entry["steps"]
    assert failure.failed_step in steps and "shell go" not in steps, steps
    after_failure = steps[len(steps) - steps[::-1].index(failure.failed_step) :]
    assert _in_order(failure.rollback, after_failure) and failure.also <= set(after_failure), (
        f"failure at {where}: expected the undo {list(failure.rollback)} (and "
        f"{sorted(failure.also)}) after {failure.failed_step}, the device did {steps}"
    )
    if not failure.rollback:
        assert not [s for s in after_failure if s.startswith("VF_")], steps
    assert seen["nic"] == nic_before, f"failed switch leaked: {nic_before} -> {seen['nic']}"
    assert status["vf"] is None and driver["tx_path"] == "emu", (status, driver)
    assert driver["buffers"]["balanced"] == 1, driver["buffers"]
    assert seen["retry"] == "passthrough", seen
    assert seen["after"]["vf_rx_packets"] > 0 and seen["after"]["vf_tx_packets"] > 0, seen
    assert_gap_below_blackout(lab, results, f"failure at {where}")
    assert_exact(results, f"failure at {where}, rollback, retry")
