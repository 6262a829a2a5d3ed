"""The PF a conformance test configures, whatever NIC is behind it: the lab's own SR-IOV
NIC (an emulator's control socket, or a real PF over SSH on a ``backend: lab`` host) and
the QEMU igb lab host's real kernel SR-IOV (Linux PF driver), through one interface
(``drivers.pf_control.PfControl``). A test takes ``pf_target`` and runs on each; its
module imports ``pf_target_fixture`` (a parameter must not shadow an imported function).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.lab import Lab
from drivers.emulated_pf import EmulatedPf
from drivers.linux_pf import LinuxPf
from drivers.pf_control import PfControl
from tests.conformance import kit

#: ``pf_target`` parameters: the topology's NIC, and the QEMU igb host of the session.
PF_TARGETS = ("lab-nic", "qemu-igb")


@dataclass(frozen=True)
class PfTarget:
    """A PF and one VF of it a test may change (the fixture puts it back)."""

    label: str
    pf: PfControl
    vf: int
    #: The VF's port has an administrator's policy (the emulated NIC: the guest's).
    port_policy: bool


def _lab_nic(request: pytest.FixtureRequest) -> Iterator[PfTarget]:
    lab: Lab = request.getfixturevalue("lab")
    guests = kit.npa_guests(lab)
    emulated_guests = [g for g in guests if lab.backend_of(g) == "emulated"]
    if emulated_guests:
        request.getfixturevalue("cleanup")  # guests in passthrough; ports checked after
        guest = emulated_guests[0]
        vf = int(kit.status(lab, guest)["vf"])
        spec = lab.guest_at(guest)
        nic = lab.topology.guest_nic(spec)
        assert nic is not None
        with lab.guest_nic(guest) as control:
            yield PfTarget(
                f"{spec.host}/{nic.name} ({nic.model} emulator, {guest}'s VF {vf})",
                EmulatedPf(control, f"{spec.host} NIC {nic.name}"),
                vf,
                port_policy=True,
            )
        return
    for host in lab.topology.hosts:
        for nic in host.nics:
            if host.backend == "lab" and nic.pci is not None and nic.vfs > 0:
                pf = LinuxPf(lab.host(host.name), nic.pci)
                before = pf.snapshot()
                yield PfTarget(f"{host.name}/{nic.name} (Linux PF driver)", pf, 0, False)
                pf.restore(before)
                return
    pytest.skip(
        f"topology lab {lab.name!r} lacks an SR-IOV NIC with VFs "
        "(and a guest in passthrough on one)"
    )


@pytest.fixture(name="pf_target", params=PF_TARGETS)
def pf_target_fixture(request: pytest.FixtureRequest) -> Iterator[PfTarget]:
    """Each PF the session offers, with a VF to change; put back as found afterwards."""
    if request.param == "qemu-igb":
        pf: LinuxPf = request.getfixturevalue("igb_vfs")  # restores its baseline itself
        yield PfTarget("QEMU igb host (Linux PF driver)", pf, 1, port_policy=False)
        return
    yield from _lab_nic(request)
