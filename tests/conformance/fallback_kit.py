"""What the fallback tests (FB-01, FB-02, FB-05 .. FB-08, ``test_fb_*.py``) share.

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

The fixtures ``guest`` and ``undo`` live here, not in a conftest: a test module imports
them (``guest_fixture``, ``undo_fixture``: a test's parameter of the fixture's name must
not shadow the import) and pytest finds them in its namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench.lab import Lab
from bench.traffic.results import DirectionResult
from nic_emulators.config import guest_run_dir
from tests.conformance import kit

#: Traffic schedule: frames per second each way, and how long.
PPS = 2000
SECONDS = 2.5
SHORT_SECONDS = 0.6
#: How long a test leaves the guest in a mode under traffic before its next step.
HOLD_S = 0.5

Undo = Callable[[], object]


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


# -- what a measurement must show --------------------------------------------------------


def assert_exact(results: list[DirectionResult], what: str) -> None:
    """Every frame of every direction arrived once, in order, with its stamp's CRC intact."""
    short = [why for r in results if (why := kit.exact(r))]
    assert not short, f"{what}: not an exact delivery:\n" + "\n".join(short)


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


def back_to_passthrough(lab: Lab, guest: str) -> Undo:
    return lambda: kit.ensure_passthrough(lab, guest)


@pytest.fixture(name="guest")
def guest_fixture(lab: Lab) -> str:
    """The guest under test: the first NPA guest of the topology."""
    guests = kit.npa_guests(lab)
    if not guests:
        pytest.skip("no guest in npa mode on a host whose NIC has VFs")
    return guests[0]


@pytest.fixture(name="undo")
def undo_fixture(lab: Lab, guest: str) -> Iterator[UndoList]:
    """Start with every NPA guest of the NIC in passthrough; undo the test's levers after it,
    then check the lab is as found (guests in passthrough; VF states, owners, vectors)."""
    peers = nic_guests(lab, guest)
    for name in peers:
        kit.ensure_passthrough(lab, name)
    found = nic_snapshot(lab, guest)
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
    assert not problems, "the test left the lab changed:\n" + "\n".join(problems)
