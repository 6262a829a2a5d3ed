"""Passthrough readiness: a VF's IOMMU group (the QEMU host has an emulated VT-d) and the
vfio-pci bind/unbind round trip through ``driver_override``.

Fixtures: ``tests/qemu_sriov_host.py``.
"""

from __future__ import annotations

from drivers.linux_pf import LinuxPf
from drivers.linux_pf_vfio import VFIO_DRIVER, bind_vfio, passthrough_check, unbind_vfio

VF = 2


def test_a_vf_in_its_own_iommu_group_can_be_passed_through(igb_vfs: LinuxPf) -> None:
    """Steps: check the VF. Verify: it has an IOMMU group holding only itself, so it can."""
    check = passthrough_check(igb_vfs, VF)
    device = igb_vfs.vf_device(VF)
    assert check.possible, check.reason
    assert check.iommu_group == device.iommu_group is not None
    assert check.group_devices == (device.pci,), check


def test_vfio_pci_bind_and_unbind_round_trip(igb_vfs: LinuxPf) -> None:
    """Steps: bind the VF to vfio-pci, then give it back, twice. Verify: vfio-pci holds it
    (its /dev/vfio node exists, its netdev is gone), then igbvf again with a netdev; the
    other VFs keep their drivers throughout."""
    others = {d.vf: d.driver for d in igb_vfs.vf_devices() if d.vf != VF}
    for _ in range(2):
        bound = bind_vfio(igb_vfs, VF)
        assert (bound.driver, bound.netdev) == (VFIO_DRIVER, None), bound
        assert {d.vf: d.driver for d in igb_vfs.vf_devices() if d.vf != VF} == others
        back = unbind_vfio(igb_vfs, VF)
        assert back.driver == "igbvf" and back.netdev, back
    override = igb_vfs.run(
        f"cat /sys/bus/pci/devices/{back.pci}/driver_override", action="driver_override"
    )
    assert override.strip() in ("", "(null)"), override
