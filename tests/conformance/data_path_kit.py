"""What the data-path tests (DP-01 .. DP-11, ``test_dp_*.py``) share: the devices, and
leaving the lab as it was found.

The tests read the devices' own state: the guest's vmxnet3 device (mode, reason,
emulation counters), its driver (the shell: counters, buffer accounting, errors) and the
NIC (VF state, queue statistics, switch port configuration and counters); the helpers
below reach each of them. ``Cleanup`` holds the undo steps a test registers next to each
change; the ``cleanup`` fixture (``conftest.py``) runs them and compares ``lab_view``
before and after. Hand-made frames are in ``data_path_probes``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bench.lab import Lab
from bench.traffic.results import DirectionResult
from nic_emulators.models import MODELS, NicModel
from tests.conformance import kit

# -- the devices -------------------------------------------------------------------


def device_call(lab: Lab, guest: str, op: str, **args: Any) -> dict[str, Any]:
    """An operation on ``guest``'s vmxnet3 device (the hypervisor side)."""
    with lab.guest_control(guest) as device:
        return device.call(op, **args)


def driver_call(lab: Lab, guest: str, op: str, **args: Any) -> dict[str, Any]:
    """An operation on ``guest``'s driver (the shell: the guest's own view)."""
    with lab.guest_driver(guest) as driver:
        return driver.call(op, **args)


def nic_call(lab: Lab, guest: str, op: str, **args: Any) -> dict[str, Any]:
    """An operation on the NIC ``guest`` takes its VFs from."""
    with lab.guest_nic(guest) as nic:
        return nic.call(op, **args)


def nic_model(lab: Lab, guest: str) -> NicModel:
    nic = lab.topology.guest_nic(lab.topology.guest(guest))
    assert nic is not None and nic.model is not None, f"{guest} has no modelled SR-IOV NIC"
    return MODELS[nic.model]


def vf_state(lab: Lab, guest: str, vf: int) -> dict[str, Any]:
    """VF ``vf`` as the NIC's STATUS describes it (state, owner, features, fault, counters)."""
    vfs: list[dict[str, Any]] = nic_call(lab, guest, "STATUS")["vfs"]
    (found,) = [v for v in vfs if v["vf"] == vf]
    return found


def owned_vfs(lab: Lab, guest: str) -> list[int]:
    return [v["vf"] for v in nic_call(lab, guest, "STATUS")["vfs"] if v["owner"] == guest]


def queue_stats(lab: Lab, guest: str, vf: int) -> Counter[str]:
    """GET_QUEUE_STATS of ``vf``, summed over its queues: what changed since the last read."""
    total: Counter[str] = Counter()
    for queue in nic_call(lab, guest, "GET_QUEUE_STATS", vf=vf)["queues"]:
        total.update(queue)
    return total


def counters(lab: Lab, guest: str) -> dict[str, int]:
    found: dict[str, int] = kit.driver_status(lab, guest)["counters"]
    return found


def put_in(lab: Lab, guest: str, mode: str) -> dict[str, Any]:
    """Switch ``guest`` to ``mode`` unless it is there; its status once it is."""
    if kit.status(lab, guest)["mode"] != mode:
        kit.switch(lab, guest, mode)
    return kit.wait_mode(lab, guest, mode)


def port_of(status: dict[str, Any]) -> str:
    """The switch port a guest's frames use now: its VF's, or its vport in emulation."""
    return f"vf{status['vf']}" if status["mode"] == "passthrough" else f"vport:{status['guest']}"


def port_config(lab: Lab, guest: str, port: str | None = None) -> dict[str, Any]:
    return nic_call(lab, guest, "PORT_CONFIG", port=port or f"vport:{guest}")


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``condition`` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def both_exact(results: Sequence[DirectionResult], what: str) -> None:
    problems = [p for p in map(kit.exact, results) if p]
    assert not problems, f"{what}: " + "; ".join(problems)


# -- leaving the lab as it was found -------------------------------------------------


class Cleanup:
    """Undo steps registered next to the change they undo; run newest first."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def defer(self, what: str, step: Callable[[], object]) -> None:
        self._steps.append((what, step))

    def run(self) -> list[str]:
        failures = []
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as err:  # every step runs; all failures are reported
                failures.append(f"undo {what}: {type(err).__name__}: {err}")
        return failures


def sharing_nic(lab: Lab, guest: str) -> list[str]:
    """The NPA guests taking VFs from ``guest``'s NIC, ``guest`` first: the ones these tests
    touch (a NIC-wide lever, such as the features its VFs offer, reaches all of them)."""
    topology = lab.topology
    mine = topology.guest(guest)
    return [guest] + [
        name
        for name in kit.npa_guests(lab)
        if name != guest
        and topology.guest(name).host == mine.host
        and topology.guest_nic(topology.guest(name)) == topology.guest_nic(mine)
    ]


def lab_view(lab: Lab, guests: Sequence[str]) -> dict[str, Any]:
    """What a test may change and must put back: each guest's port configuration, plugin
    fault and installed plugins; each NIC's free interrupt vectors and offered features."""
    view: dict[str, Any] = {}
    for name in guests:
        driver = kit.driver_status(lab, name)
        nic = nic_call(lab, name, "STATUS")
        vport = f"vport:{name}"
        config = port_config(lab, name) if vport in nic["vports"] else None
        view[name] = (config, driver["plugin_fault"], driver["installed"])
        view[nic["nic"]] = (nic["vectors_free"], [v["offered"] for v in nic["vfs"]])
    return view


def reset_port(lab: Lab, guest: str, found: dict[str, Any]) -> None:
    """Back to the filters of ``found`` (a PORT_CONFIG), through the device, in either mode."""
    device_call(lab, guest, "filter", set="multicast", macs=found["multicast"])
    device_call(
        lab, guest, "filter", set="rx_mode", promisc=found["promisc"], allmulti=found["allmulti"]
    )
    device_call(lab, guest, "filter", set="del_vlans", lo=1, hi=4094)
    for vid in found["vlans"]:
        device_call(lab, guest, "filter", set="add_vlans", lo=vid, hi=vid)
    device_call(lab, guest, "filter", set="default_vlan", vlan=found["default_vlan"])
    device_call(lab, guest, "filter", set="mtu", mtu=found["mtu"])


def filters(lab: Lab, guest: str, cleanup: Cleanup) -> Callable[..., dict[str, Any]]:
    """A ``filter`` call on the guest's device whose every change is undone after the test."""
    found = port_config(lab, guest)
    cleanup.defer(f"{guest}'s filters", lambda: reset_port(lab, guest, found))

    def call(setting: str, **args: Any) -> dict[str, Any]:
        return device_call(lab, guest, "filter", set=setting, **args)

    return call
