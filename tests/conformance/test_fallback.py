"""Fallback to emulation without migration: catalogue FB-01, FB-02, FB-05, FB-06, FB-07, FB-08.

Every scenario runs under sequenced, stamped traffic both ways between the
generator and the guest (``kit.both_ways``: flow 1 generator -> guest, flow 2
guest -> generator) and reads what the devices say of themselves: the vmxnet3
device (mode, reason, switch history with its steps), the guest's shell (which
path carried frames, buffer accounting) and the NIC (who owns which VF, the
interrupt vector pool). Pass thresholds come from the topology's ``limits:``;
the rates and pauses below are the schedule, not thresholds.

Tests share one lab: each registers the undo of every lever it pulls right next
to pulling it (``undo``); the fixture then checks that every NPA guest of the
NIC is back in passthrough and the NIC is as it was found.

Known data-path bugs are xfailed only when the measurement shows exactly their
symptom (``KnownBug``); any other shortfall fails.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.lab import Lab
from bench.traffic.results import DirectionResult
from nic_emulators.config import guest_run_dir, nic_run_dir
from nic_emulators.control import ControlError
from tests.conformance import kit

#: Traffic schedule: frames per second each way, and how long.
PPS = 2000
SECONDS = 2.5
SHORT_SECONDS = 0.6
#: How long a test leaves the guest in a mode under traffic before its next step.
HOLD_S = 0.5
#: Round trips passthrough -> emulation -> passthrough of the switch storm.
STORM_ROUND_TRIPS = 15
#: Owner name under which FB-08 takes the free VFs away from the guest.
VF_TAKER = "fb-08 (every free VF taken)"

Undo = Callable[[], object]


@dataclass(frozen=True)
class KnownBug:
    """A reported data-path bug, recognised by its measured symptom in one direction."""

    flow: int  # 1: generator -> guest, 2: guest -> generator
    symptom: str  # "lost" or "reordered": the only way that direction falls short
    reason: str


#: nic_emulators/vmxnet3/device.py ``to_passthrough``: the rollback after VF_ACTIVATE
#: detaches the guest first and quiesces after; in between the NIC still steers the
#: guest's frames to a VF nobody reads.
ROLLBACK_ORDER = KnownBug(
    1,
    "lost",
    "frames to the guest lost in the rollback after VF_ACTIVATE: the device detaches the "
    "guest before VF_QUIESCE, so the NIC steers frames to a VF nobody reads "
    "(nic_emulators/vmxnet3/device.py to_passthrough, rollback branch)",
)
#: nic_emulators/nic.py ``run``: a control operation that removes a VF closes its doorbell
#: FIFO while the same select() batch still holds the doorbell's readiness; its drain()
#: then raises EBADF and the NIC emulator dies (seen under traffic), taking the lab with it.
NIC_REMOVAL_RACE = (
    "VF_REMOVE under traffic can kill the NIC emulator: nic_emulators/nic.py run() calls "
    "key.data() for a doorbell that VF_REMOVE unregistered and closed earlier in the same "
    "select() batch (OSError EBADF in notify.Fifo.drain); not run, it would wreck the lab"
)
#: nic_emulators/nic_ops.py ``inject`` reads the operation to fail from the argument ``op``,
#: which is the control protocol's own request key (nic_emulators/control.py).
INJECT_UNREACHABLE = (
    "the NIC's INJECT lever cannot be armed: its argument 'op' is the control protocol's own "
    "request key ({'id', 'op', ...args}; ControlClient.call(op, **args)), so every INJECT is "
    "answered 'INJECT: missing argument op' (nic_emulators/nic_ops.py inject)"
)
#: drivers/shell.py ``run`` (like nic_emulators/nic.py ``run``) calls ``key.data()`` for every
#: key of a select() batch, even one an earlier callback of the batch unregistered and closed:
#: a ``detach``/``vf-lost`` step closes the VF's interrupt FIFO while its readiness is still
#: queued, and the shell dies of EBADF; the guest then has no driver until the lab is rebuilt.
SELECT_BATCH_CRASH = (
    "a data-path process died of the select-batch race (drivers/shell.py / "
    "nic_emulators/nic.py run(): key.data() on a FIFO an earlier callback of the same "
    "select() batch closed; OSError EBADF in notify.Fifo.drain)"
)
#: What that crash leaves at the end of the dead process's log.
CRASH_TRACE = ("notify.py", "in drain", "OSError: [Errno 9] Bad file descriptor")


# -- reaching the devices ---------------------------------------------------------------


def vmx(lab: Lab, guest: str, op: str, /, **args: Any) -> dict[str, Any]:
    """One operation on ``guest``'s vmxnet3 device (the hypervisor's side)."""
    with lab.guest_control(guest) as device:
        return device.call(op, **args)


def shell(lab: Lab, guest: str, op: str, /, **args: Any) -> dict[str, Any]:
    """One operation on ``guest``'s driver (the shell: the guest's own view)."""
    with lab.guest_driver(guest) as driver:
        return driver.call(op, **args)


def nic(lab: Lab, guest: str, op: str, /, **args: Any) -> dict[str, Any]:
    """One operation on the NIC ``guest`` takes its VFs from."""
    with lab.guest_nic(guest) as control:
        return control.call(op, **args)


def vfs_of(lab: Lab, guest: str) -> list[dict[str, Any]]:
    vfs: list[dict[str, Any]] = nic(lab, guest, "STATUS")["vfs"]
    return vfs


def counters(lab: Lab, guest: str) -> dict[str, int]:
    counted: dict[str, int] = kit.driver_status(lab, guest)["counters"]
    return counted


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Frames per path between two readings of the shell's counters."""
    names = ("vf_rx_packets", "vf_tx_packets", "emu_rx_packets", "emu_tx_packets")
    return {name: after[name] - before[name] for name in names}


def handover_s(lab: Lab) -> float:
    """Deadline for a guest to give up or take back a VF (``limits.vf_release_timeout_s``)."""
    return float(lab.topology.limits.vf_release_timeout_s)


def nic_guests(lab: Lab, guest: str) -> list[str]:
    """The NPA guests that take VFs from the same NIC as ``guest`` (``guest`` included)."""
    spec = lab.topology.guest(guest)
    same = []
    for name in kit.npa_guests(lab):
        other = lab.topology.guest(name)
        if other.host == spec.host and lab.topology.guest_nic(other) == lab.topology.guest_nic(
            spec
        ):
            same.append(name)
    return same


def nic_snapshot(lab: Lab, guest: str) -> dict[str, Any]:
    """What must not change across a test: VF states, owners (a multiset: a guest may come
    back on another VF), offered features, free interrupt vectors."""
    status = nic(lab, guest, "STATUS")
    vfs = sorted((v["state"], v["owner"] or "", ",".join(v["offered"])) for v in status["vfs"])
    return {"vfs": vfs, "vectors_free": status["vectors_free"]}


def guest_links(lab: Lab, guest: str) -> list[tuple[int, str, str]]:
    """Every netdev of the guest: (ifindex, name, MAC); a leaked or new one shows here."""
    out = lab.host(guest).run("ip -j link show", timeout=10)
    assert out.exit_status == 0, out.stderr
    return sorted((x["ifindex"], x["ifname"], x["address"]) for x in json.loads(out.stdout))


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


# -- what a measurement must show --------------------------------------------------------


def _shows(result: DirectionResult, symptom: str) -> bool:
    others = {"lost", "duplicates", "reordered", "corrupt"} - {symptom}
    return getattr(result, symptom) > 0 and all(getattr(result, o) == 0 for o in others)


def assert_exact(results: list[DirectionResult], what: str, *known: KnownBug) -> None:
    """Every frame of every direction arrived once, in order, with its stamp's CRC intact.

    Only if each short direction shows exactly the symptom of a ``known`` bug: xfail.
    """
    short = {r.flow: r for r in results if kit.exact(r)}
    if not short:
        return
    report = "\n".join(str(kit.exact(r)) for r in short.values())
    bugs = {bug.flow: bug for bug in known}
    if all(f in bugs and _shows(r, bugs[f].symptom) for f, r in short.items()):
        pytest.xfail(f"{what}: {'; '.join(bugs[f].reason for f in short)}\nmeasured: {report}")
    raise AssertionError(f"{what}: not an exact delivery:\n{report}")


def assert_gap_below_blackout(lab: Lab, results: list[DirectionResult], what: str) -> None:
    limit = float(lab.topology.limits.blackout_ms)
    for r in results:
        assert r.longest_gap_ms < limit, (
            f"{what}: {r.name}: longest gap {r.longest_gap_ms:.1f} ms (ending "
            f"{r.gap_end_ms:.0f} ms into the flow), limit blackout_ms {limit:g}"
        )


def under_traffic(
    lab: Lab, guest: str, action: Callable[[], Any]
) -> tuple[list[DirectionResult], Any]:
    """The scheduled traffic both ways, ``action`` taken half a second into it."""
    return kit.traffic_during(lab, kit.both_ways(lab, guest, PPS, SECONDS), action)


def short_traffic(lab: Lab, guest: str) -> list[DirectionResult]:
    return kit.traffic_during(lab, kit.both_ways(lab, guest, PPS, SHORT_SECONDS), lambda: None)[0]


# -- a data-path process that died of a known bug ----------------------------------------


def known_crash(lab: Lab, guest: str) -> str | None:
    """Which of the guest's shell, its device and its NIC no longer answers because it died
    of the select-batch race (its log ends in that trace; emulated labs), or None."""
    run_dir = guest_run_dir(lab.state.directory, guest)
    spec = lab.topology.guest(guest)
    card = lab.topology.guest_nic(spec)
    daemons: list[tuple[Callable[[], object], Path]] = [
        (lambda: shell(lab, guest, "status"), run_dir / "shell.log"),
        (lambda: vmx(lab, guest, "status"), run_dir / "vmx.log"),
    ]
    if card is not None:
        log = nic_run_dir(lab.state.directory, spec.host, card.name) / "nic.log"
        daemons.append((lambda: nic(lab, guest, "STATUS"), log))
    for ask, log in daemons:
        try:
            ask()
            continue
        except Exception:  # it does not answer: see why in its log
            pass
        try:
            tail = log.read_text(errors="replace")[-3000:]
        except OSError:
            continue
        if all(mark in tail for mark in CRASH_TRACE):
            return f"{log} ends in that trace"
    return None


def xfail_on_known_crash(test: Callable[..., None]) -> Callable[..., None]:
    """A test that fails because a data-path process died of the known race xfails, naming
    the dead process's log; any other failure stands."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        except Exception:
            crash = known_crash(kwargs["lab"], kwargs["guest"])
            if crash:
                pytest.xfail(f"{SELECT_BATCH_CRASH}: {crash}")
            raise

    return run


# -- leaving the lab as found ------------------------------------------------------------


class UndoList:
    """Undo actions registered next to the lever they undo, run last-in first-out."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Undo]] = []

    def __call__(self, what: str, action: Undo) -> None:
        self.actions.append((what, action))

    def run(self) -> list[str]:
        problems = []
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except Exception as err:  # every undo runs, whatever one of them did
                problems.append(f"undo {what}: {type(err).__name__}: {err}")
        return problems


@pytest.fixture
def guest(lab: Lab) -> str:
    """The guest under test: the first NPA guest of the topology."""
    guests = kit.npa_guests(lab)
    if not guests:
        pytest.skip("no guest in npa mode on a host whose NIC has VFs")
    return guests[0]


@pytest.fixture
def undo(lab: Lab, guest: str) -> Iterator[UndoList]:
    """Start with every NPA guest of the NIC in passthrough; undo the test's levers after it,
    then check the lab is as found (guests in passthrough; VF states, owners, vectors)."""
    peers = nic_guests(lab, guest)
    try:
        for name in peers:
            kit.ensure_passthrough(lab, name)
        found = nic_snapshot(lab, guest)
    except Exception:
        crash = known_crash(lab, guest)
        if crash:
            pytest.skip(f"the data path died in an earlier test: {SELECT_BATCH_CRASH}: {crash}")
        raise
    actions = UndoList()
    yield actions
    problems = actions.run()
    for name in peers:
        try:
            if kit.status(lab, name)["mode"] != "passthrough":
                kit.ensure_passthrough(lab, name)
            kit.wait_mode(lab, name, "passthrough", timeout=handover_s(lab))
        except Exception as err:  # a dead shell or device is named with its log
            logs = guest_run_dir(lab.state.directory, name)
            problems.append(f"{name} not back in passthrough: {err} (logs: {logs})")
    try:
        now = nic_snapshot(lab, guest)
    except Exception as err:
        problems.append(f"the NIC does not answer: {err} (log: {lab.state.directory / 'nics'})")
    else:
        if now != found:
            problems.append(f"the NIC is not as found:\n  before {found}\n  after  {now}")
    if problems and (crash := known_crash(lab, guest)):
        pytest.xfail(f"{SELECT_BATCH_CRASH}: {crash}")
    assert not problems, "the test left the lab changed:\n" + "\n".join(problems)


def back_to_passthrough(lab: Lab, guest: str) -> Undo:
    return lambda: kit.ensure_passthrough(lab, guest)


# -- FB-01 -------------------------------------------------------------------------------


@pytest.mark.catalogue("FB-01")
@pytest.mark.requires("guests", "nic:sriov")
@xfail_on_known_crash
def test_planned_switch_round_trip_loses_nothing_and_keeps_the_netdev(
    lab: Lab, guest: str, undo: UndoList
) -> None:
    """Steps: under traffic both ways, switch the guest passthrough -> emulation, keep it
    there for a while, switch it back to passthrough.
    Verify: every frame arrives once, in order, intact; the longest gap stays below
    ``blackout_ms``; emulation carried both directions in between and the VF after; the
    guest's netdev (ifindex, name), MAC and IP are the same before, during and after."""
    undo("switch back to passthrough", back_to_passthrough(lab, guest))
    netdev = kit.netdev(lab, guest)

    def round_trip() -> dict[str, Any]:
        down = kit.switch(lab, guest, "emulation")
        start = counters(lab, guest)
        time.sleep(HOLD_S)  # the schedule: traffic runs on emulation
        during = kit.netdev(lab, guest)
        up = kit.switch(lab, guest, "passthrough")
        back = counters(lab, guest)
        time.sleep(HOLD_S)  # the schedule: traffic runs on the VF again
        emulation, passthrough = grown(start, back), grown(back, counters(lab, guest))
        return {"modes": (down["mode"], up["mode"]), "netdev": during, "emu": emulation,
                "vf": passthrough}  # fmt: skip

    results, seen = under_traffic(lab, guest, round_trip)

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
@xfail_on_known_crash
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
    if NIC_REMOVAL_RACE:
        pytest.xfail(NIC_REMOVAL_RACE)
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
@xfail_on_known_crash
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


# -- FB-06 -------------------------------------------------------------------------------


@pytest.mark.catalogue("FB-06")
@pytest.mark.requires("guests", "nic:sriov")
@xfail_on_known_crash
def test_switch_storm_keeps_the_stream_intact_and_leaks_nothing(
    lab: Lab, guest: str, undo: UndoList
) -> None:
    """Steps: under traffic both ways, switch the guest passthrough <-> emulation back to
    back, ``STORM_ROUND_TRIPS`` round trips (20+ switches).
    Verify: every switch succeeded; afterwards each NPA guest of the NIC owns exactly one
    VF and the rest are free, the vector pool is as before, the shell's buffers balance
    with none left on the VF or pending, the guest has the same netdevs, MAC and IP; the
    longest gap stays below ``blackout_ms``; every frame arrives once, in order, with its
    stamp's CRC intact (the stream's payload integrity)."""
    undo("switch back to passthrough", back_to_passthrough(lab, guest))
    netdev, links, nic_before = (
        kit.netdev(lab, guest),
        guest_links(lab, guest),
        nic_snapshot(lab, guest),
    )

    def storm() -> list[str]:
        with lab.guest_control(guest) as device:
            return [
                device.call("switch", to=mode)["mode"]
                for _ in range(STORM_ROUND_TRIPS)
                for mode in ("emulation", "passthrough")
            ]

    results, modes = under_traffic(lab, guest, storm)

    assert len(modes) >= 20, f"a storm is 20+ switches, made {len(modes)}"
    assert modes == ["emulation", "passthrough"] * STORM_ROUND_TRIPS, modes
    vfs, peers = vfs_of(lab, guest), nic_guests(lab, guest)
    owners = sorted(v["owner"] for v in vfs if v["owner"])
    assert owners == sorted(peers), f"each NPA guest ({peers}) must own one VF, owners: {owners}"
    states = sorted(v["state"] for v in vfs)
    assert states == sorted(["active"] * len(peers) + ["free"] * (len(vfs) - len(peers))), states
    assert nic_snapshot(lab, guest) == nic_before, "VFs or interrupt vectors leaked"
    buffers = kit.driver_status(lab, guest)["buffers"]
    assert (buffers["balanced"], buffers["vf-tx"], buffers["pending"]) == (1, 0, 0), buffers
    assert kit.netdev(lab, guest) == netdev, "the guest's netdev, MAC or IP changed"
    assert guest_links(lab, guest) == links, "the guest's set of netdevs changed"
    assert_gap_below_blackout(lab, results, f"storm of {len(modes)} switches")
    assert_exact(results, f"storm of {len(modes)} switches")


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
@xfail_on_known_crash
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
    known: tuple[KnownBug, ...] = ()


def _injected(op: str) -> Arm:
    def arm(lab: Lab, guest: str, undo: UndoList) -> Undo:
        pytest.xfail(f"INJECT {op}: {INJECT_UNREACHABLE}")

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
        frozenset({"shell detach"}), (ROLLBACK_ORDER,),
    ),
}  # fmt: skip


def _in_order(wanted: tuple[str, ...], steps: list[str]) -> bool:
    remaining = iter(steps)
    return all(step in remaining for step in wanted)


@pytest.mark.catalogue("FB-08")
@pytest.mark.requires("guests", "nic:sriov")
@pytest.mark.parametrize("where", list(STEP_FAILURES))
@xfail_on_known_crash
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
    assert_exact(results, f"failure at {where}, rollback, retry", *failure.known)
