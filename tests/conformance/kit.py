"""What the conformance tests share: reaching guests' devices, traffic during an action.

Every helper takes the ``Lab``; nothing here knows a backend. Thresholds come
from the topology's ``limits:`` (``lab.topology.limits``), never from constants.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.hypervisor import hypervisor_for
from bench.lab import Lab
from bench.qemu.guest_net import guest_netdev
from bench.qemu.guests import QemuGuests
from bench.traffic.engine import GENERATORS_SENDING, TrafficSpec, run_flows
from bench.traffic.results import DirectionResult

#: A guest that may take part in NPA tests: npa mode on a host with an SR-IOV NIC.
NPA = "npa"


def npa_guests(lab: Lab) -> list[str]:
    """Guests in npa mode whose host NIC has VFs, in topology order."""
    found = []
    for guest in lab.topology.guests:
        nic = lab.topology.guest_nic(guest)
        if guest.nic_mode == NPA and nic is not None and nic.vfs > 0:
            found.append(guest.name)
    return found


def vf_guests(lab: Lab) -> list[str]:
    """Guests that take a VF on either backend: ``npa_guests``, and failover guests on a
    QEMU host whose NIC model gives primaries ("VFs")."""
    found = npa_guests(lab)
    for guest in lab.topology.qemu_guests():
        nic = lab.topology.guest_nic(guest)
        if guest.nic_mode == "failover" and nic is not None and nic.vfs > 0:
            found.append(guest.name)
    return found


def qemu_guest(lab: Lab, guest: str) -> bool:
    """Whether ``guest`` is a QEMU VM (reached over its console, not over SSH)."""
    return lab.reflector_address(guest) is not None


def generator(lab: Lab) -> str:
    """The lab's traffic generator host (role traffic-generator)."""
    for host in lab.topology.hosts:
        if host.role == "traffic-generator":
            return host.name
    raise LookupError("the topology has no traffic-generator host")


def status(lab: Lab, guest: str) -> dict[str, Any]:
    """What the hypervisor side reports of the guest: its vmxnet3 device, or for a QEMU
    guest what the guest shows (mode, reason, primary)."""
    if qemu_guest(lab, guest):
        hv = hypervisor_for(lab)
        try:
            return hv.status(guest)
        finally:
            hv.close()
    with lab.guest_control(guest) as device:
        return device.call("status")


def driver_status(lab: Lab, guest: str) -> dict[str, Any]:
    with lab.guest_driver(guest) as driver:
        return driver.call("status")


def switch(lab: Lab, guest: str, to: str) -> dict[str, Any]:
    with lab.guest_control(guest) as device:
        return device.call("switch", to=to)


def wait_mode(lab: Lab, guest: str, mode: str, timeout: float = 10.0) -> dict[str, Any]:
    """Wait until ``guest`` is in ``mode`` with no switch in progress; its status."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = status(lab, guest)
        if seen["mode"] == mode and not seen.get("busy"):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"guest {guest} not in {mode} within {timeout} s; last status: {seen}")


def ensure_passthrough(lab: Lab, guest: str, timeout: float = 10.0) -> dict[str, Any]:
    """Put ``guest`` back in passthrough (a previous test may have left it in emulation)."""
    current = status(lab, guest)
    if current["mode"] != "passthrough" and not current.get("busy"):
        switch(lab, guest, "passthrough")
    return wait_mode(lab, guest, "passthrough", timeout)


def both_ways(lab: Lab, guest: str, pps: int, seconds: float) -> list[TrafficSpec]:
    """Sequenced UDP generator->guest and guest->generator (flows 1 and 2)."""
    gen = generator(lab)
    return [
        TrafficSpec(source=gen, to=guest, pps=pps, duration_s=seconds, flow=1),
        TrafficSpec(source=guest, to=gen, pps=pps, duration_s=seconds, flow=2),
    ]


def traffic_during(
    lab: Lab, specs: Sequence[TrafficSpec], action: Callable[[], Any], start_after_s: float = 0.5
) -> tuple[list[DirectionResult], Any]:
    """Run ``specs`` and, ``start_after_s`` after they started, ``action``; both results."""
    results: list[DirectionResult] = []
    failure: list[BaseException] = []
    sending = threading.Event()

    def progress(message: str) -> None:
        if message.startswith(GENERATORS_SENDING):
            sending.set()

    def run() -> None:
        try:
            results.extend(run_flows(lab, specs, progress))
        except BaseException as err:  # re-raised in the test's thread
            failure.append(err)
        finally:
            sending.set()

    thread = threading.Thread(target=run, name="traffic")
    thread.start()
    try:
        if not sending.wait(timeout=30):
            raise AssertionError("the traffic generators did not start within 30 s")
        time.sleep(start_after_s)  # part of the schedule: act this far into the flows
        outcome = action()
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return results, outcome


def netdev(lab: Lab, guest: str) -> dict[str, Any]:
    """The guest's netdev as the guest sees it: ifindex, name, MAC, IPv4 addresses."""
    if qemu_guest(lab, guest):
        return _console_netdev(lab, guest)
    out = lab.host(guest).run("ip -j addr show dev eth0", timeout=10)
    assert out.exit_status == 0, out.stderr
    (link,) = json.loads(out.stdout)
    return {
        "ifindex": link["ifindex"],
        "name": link["ifname"],
        "mac": link["address"],
        "ipv4": sorted(a["local"] for a in link["addr_info"] if a["family"] == "inet"),
    }


def exact(result: DirectionResult) -> str | None:
    """Why ``result`` is not an exact delivery (None if every frame came once, in order)."""
    if (result.lost, result.duplicates, result.reordered, result.corrupt) == (0, 0, 0, 0):
        return None
    return (
        f"{result.name}: sent {result.sent}, received {result.received}: {result.lost} lost, "
        f"{result.duplicates} duplicated, {result.reordered} reordered, {result.corrupt} corrupt; "
        f"missing {list(result.missing[:5])}; longest gap {result.longest_gap_ms:.2f} ms"
    )


def _console_netdev(lab: Lab, guest: str) -> dict[str, Any]:
    """``netdev`` of a QEMU guest, read on its serial console (busybox ``ip``)."""
    guests = QemuGuests(lab)
    try:
        instance = guests.current(guest)
        net = guests.net(instance)
        dev = guest_netdev(net)
        assert dev is not None, f"{guest} has no network device: {net.netdevs}"
        shown = guests.run(
            instance, f"cat /sys/class/net/{dev.name}/ifindex; ip -4 addr show dev {dev.name}"
        )
    finally:
        guests.close()
    lines = shown.splitlines()
    return {
        "ifindex": int(lines[0]),
        "name": dev.name,
        "mac": dev.mac,
        "ipv4": sorted(
            w.split("/")[0] for line in lines if "inet " in line for w in line.split()[1:2]
        ),
    }
