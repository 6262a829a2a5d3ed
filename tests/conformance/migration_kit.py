"""What the live-migration tests (LM-01 .. LM-10, ``test_lm_*.py``) share.

Tests never name hosts: they ask for a destination by what it must offer
(``destination``: the same NIC vendor or another, a VF or none) and skip,
with the reason, on a topology that has none — the default lab has two
vendors and a host without a NIC; ``topologies/migration-lab.yaml`` has the
rest. Every migration runs through the orchestrator (``bench.migration``)
under traffic both ways and is judged against the topology's ``limits:``.

The fixtures (``hv``, ``migratable``, ``judged``, ``homecoming``) are made
visible to every conformance module by ``conftest.py``. ``homecoming`` puts
every guest back on its topology host (in passthrough where it can be) before
and after each test, resets the guests' release levers, and checks that
nothing leaked: one device process per guest, no VF owned by a guest that is
not on that host or owned twice, shared memory as found.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.hypervisor import Hypervisor, hypervisor_for
from bench.hypervisor.placement import nic_at
from bench.lab import Lab
from bench.lab.procfs import is_alive
from bench.migration import MigrationRun, TrafficPlan, describe, offers_vf, timeline_of
from bench.qemu.failover_image import EJECT_AGAIN_COMMAND, NEVER_EJECT_COMMAND, PCI_HOTPLUG_GPE
from bench.qemu.guests import QemuGuests
from nic_emulators.config import lab_shm_files
from tests.conformance import kit

#: Traffic during each migration: frames per second each way.
PPS = 2000


def plan(**changes: Any) -> TrafficPlan:
    """UDP both ways and an established TCP stream into the guest (its hash checked)."""
    return TrafficPlan(**{"pps": PPS, "tcp": True, **changes})


def vendor_at(lab: Lab, guest: str, host: str) -> str | None:
    """The NIC model ``guest`` would take VFs from on ``host`` (None: no NIC with VFs)."""
    nic = nic_at(lab.topology, guest, host)
    return nic.model if nic is not None and nic.vfs > 0 else None


def destination(
    lab: Lab,
    guest: str,
    *,
    vendor: str | None = None,
    vf: bool = True,
    exclude: frozenset[str] = frozenset(),
) -> str:
    """A hypervisor ``guest`` can migrate to (not one of ``exclude``): with a free VF
    (``vf``) of the ``vendor`` relation "same" or "other" to where it runs now, or
    without any VF (``vf=False``). Skips the test, saying why, if there is none."""
    here = lab.guest_host(guest)
    mine = vendor_at(lab, guest, here)
    switch = lab.topology.guest_switch(lab.topology.guest(guest))
    for host in lab.topology.hosts:
        if host.name == here or host.name in exclude or host.role != "hypervisor":
            continue
        if switch is not None and not any(i.switch == switch for i in host.interfaces):
            continue
        theirs = vendor_at(lab, guest, host.name)
        if not vf and theirs is None:
            return host.name
        related = vendor is None or (vendor == "same") == (theirs == mine)
        if vf and theirs is not None and related and offers_vf(lab, guest, host.name):
            return host.name
    kinds = {"same": "a free VF of the same vendor", "other": "a free VF of another vendor"}
    wanted = kinds.get(vendor or "", "a free VF") if vf else "no VF"
    pytest.skip(f"no hypervisor in lab {lab.name} offers {guest} {wanted} (from {mine} on {here})")


def port_state(lab: Lab, guest: str) -> dict[str, Any]:
    """The guest's port on its current NIC, as the NIC holds it (MAC, filters, VLANs, MTU);
    for a QEMU guest, its netdev as the guest holds it (the primary is re-plugged fresh on
    every host: the guest's own netdev is what carries the state)."""
    if kit.qemu_guest(lab, guest):
        return kit.netdev(lab, guest)
    with lab.guest_nic(guest) as nic:
        config: dict[str, Any] = nic.call("PORT_CONFIG", port=f"vport:{guest}")
    return config


def assert_passed(run: MigrationRun) -> None:
    assert run.verdict.passed, describe(run)


Judge = Callable[[MigrationRun], None]


@pytest.fixture(name="judged")
def judged_fixture(record_timeline: Callable[[dict[str, Any]], Path]) -> Judge:
    """``judged(run)``: put the run's timeline in the report, then require its verdict."""

    def judge(run: MigrationRun) -> None:
        if run.traffic:
            record_timeline(timeline_of(run))
        assert_passed(run)

    return judge


@pytest.fixture(name="hv")
def hypervisor_fixture(lab: Lab) -> Iterator[Hypervisor]:
    """The lab's hypervisor (its backend chosen by the topology's hosts)."""
    hv = hypervisor_for(lab)
    yield hv
    hv.close()


@pytest.fixture(name="migratable")
def migratable_fixture(lab: Lab) -> str:
    """The guest under test: the first guest that takes a VF (NPA, or failover on QEMU)."""
    guests = kit.vf_guests(lab)
    if not guests:
        pytest.skip("no guest in npa or failover mode on a host whose NIC has VFs")
    return guests[0]


def release_lever(lab: Lab, guest: str, mode: str, delay_ms: float = 0) -> None:
    """How the guest answers the request to let go of its VF: ``normal``, ``never``, or
    ``delay`` by ``delay_ms`` (reset by ``homecoming``). An NPA guest's shell is told; a
    QEMU guest masks the PCI hot-plug event until then (its eject waits)."""
    if not kit.qemu_guest(lab, guest):
        with lab.guest_driver(guest) as driver:
            driver.call("vf-release", mode=mode, delay_ms=delay_ms)
        return
    guests = QemuGuests(lab)
    instance = guests.current(guest)
    masked = guests.run(instance, f"grep -cw masked {PCI_HOTPLUG_GPE} || true").strip() == "1"
    if mode == "normal":
        if masked:
            guests.run(instance, EJECT_AGAIN_COMMAND)
        guests.close()
        return
    if not masked:
        guests.run(instance, NEVER_EJECT_COMMAND)
    if mode != "delay":
        guests.close()
        return

    def unmask() -> None:
        try:
            guests.run(instance, EJECT_AGAIN_COMMAND)
        finally:
            guests.close()

    timer = threading.Timer(delay_ms / 1000, unmask)
    timer.daemon = True
    timer.start()


def _home(lab: Lab, hv: Hypervisor) -> None:
    for spec in lab.topology.guests:
        if spec.host not in {h.name for h in lab.topology.hosts if h.backend == "emulated"}:
            continue
        release_lever(lab, spec.name, "normal")
        if hv.host_of(spec.name) != spec.host:
            hv.migrate(spec.name, spec.host)
    for name in kit.npa_guests(lab):
        kit.ensure_passthrough(lab, name, timeout=float(lab.topology.limits.vf_release_timeout_s))
    for name in kit.vf_guests(lab):
        if kit.qemu_guest(lab, name) and hv.status(name)["mode"] != "passthrough":
            hv.offer_vf(name)  # a late eject after a cancelled migration took it


def leaks(lab: Lab) -> list[str]:
    """What a migration may leave behind: device processes (a QEMU guest: QEMU processes
    and TAPs), VFs, shared memory."""
    problems = _qemu_leaks(lab)
    for spec in lab.topology.emulated_guests():
        devices = [
            r
            for r in lab.state.resources
            if r.name == f"vmxnet3 {spec.name}" and is_alive(r.pid, r.start_ticks)
        ]
        if len(devices) != 1:
            problems.append(f"{spec.name}: {len(devices)} device processes running (want 1)")
    owned: dict[str, list[str]] = {}
    for host in lab.topology.hosts:
        for nic in host.nics:
            if host.backend != "emulated" or host.hypervisor != "emulated" or nic.model is None:
                continue
            with lab.nic_control(host.name, nic.name) as control:
                for vf in control.call("STATUS")["vfs"]:
                    owner = vf.get("owner")
                    if owner:
                        owned.setdefault(owner, []).append(f"{host.name}/{nic.name} VF {vf['vf']}")
                    if owner and lab.guest_host(owner) != host.name:
                        problems.append(
                            f"{host.name}/{nic.name} VF {vf['vf']} still owned by {owner}, "
                            f"which runs on {lab.guest_host(owner)}"
                        )
    problems += [
        f"{g} owns {len(vfs)} VFs: {', '.join(vfs)}" for g, vfs in owned.items() if len(vfs) > 1
    ]
    return problems


def _qemu_leaks(lab: Lab) -> list[str]:
    """One QEMU per QEMU guest, and its two TAPs on its host only."""
    problems = []
    taps: dict[str, int] = {}
    for spec in lab.topology.qemu_guests():
        running = [
            r
            for r in lab.state.resources
            if r.name.startswith(f"qemu {spec.name}#") and is_alive(r.pid, r.start_ticks)
        ]
        if len(running) != 1:
            problems.append(f"{spec.name}: {len(running)} QEMU processes running (want 1)")
        here = lab.guest_host(spec.name)
        taps[here] = taps.get(here, 0) + 2
    for host in (h.name for h in lab.topology.hosts if h.hypervisor == "qemu"):
        found = lab.host(host).run("ip -o link show type tun | wc -l").stdout.strip()
        if int(found or 0) != taps.get(host, 0):
            problems.append(f"{host}: {found} TAPs, want {taps.get(host, 0)}")
    return problems


@pytest.fixture
def homecoming(lab: Lab, hv: Hypervisor) -> Iterator[None]:
    """Guests at home in passthrough before and after; nothing leaked by the test."""
    _home(lab, hv)
    shm_before = len(lab_shm_files(lab.name))
    yield
    _home(lab, hv)
    problems = leaks(lab)
    shm_after = len(lab_shm_files(lab.name))
    if shm_after != shm_before:
        problems.append(f"{shm_after} shared-memory files, {shm_before} before the test")
    assert not problems, "the migration test left the lab changed:\n" + "\n".join(problems)
