"""Passthrough readiness of a Linux VF: its IOMMU group, and binding it to vfio-pci and back.

A VF can be given to a guest only through vfio-pci, and vfio-pci can only take a device
whose IOMMU group is viable (every other device in it unbound or also vfio's). Binding
uses ``driver_override``, the kernel's way to pin one device to one driver without
touching other devices with the same IDs; unbinding clears it and lets the kernel probe
the VF's own driver again. Both are verified by reading back which driver holds the VF.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from drivers.linux_pf import LinuxPf, VfDevice
from drivers.pf_control import NOT_APPLIED, NOT_SUPPORTED, PfControlError

VFIO_DRIVER = "vfio-pci"
#: Drivers that may share a VF's IOMMU group without making it unusable (bridges).
_HARMLESS_DRIVERS = ("pcieport", "", VFIO_DRIVER)


@dataclass(frozen=True)
class PassthroughCheck:
    """Whether a VF can be passed through, and why (or why not)."""

    vf: int
    pci: str
    possible: bool
    reason: str
    iommu_group: int | None = None
    group_devices: tuple[str, ...] = ()


def passthrough_check(pf: LinuxPf, vf: int) -> PassthroughCheck:
    """Look at the VF's IOMMU group and at vfio-pci on the host; say what stands in the way."""
    device = pf.vf_device(vf)
    if device.iommu_group is None:
        return PassthroughCheck(
            vf, device.pci, False,
            "the VF has no IOMMU group: the host's IOMMU is off or absent "
            "(enable it: intel_iommu=on or amd_iommu=on, and VT-d/AMD-Vi in the firmware)",
        )  # fmt: skip
    group = device.iommu_group
    out = pf.run(
        f"for d in /sys/kernel/iommu_groups/{group}/devices/*; do drv=$(readlink $d/driver); "
        'echo "${d##*/} ${drv##*/}"; done; '
        f"[ -d /sys/bus/pci/drivers/{VFIO_DRIVER} ] && echo vfio-present || echo vfio-missing",
        action="read the IOMMU group",
        vf=vf,
    )
    lines = out.split("\n")
    members = [line.split(" ", 1) for line in lines if line and not line.startswith("vfio-")]
    names = tuple(m[0] for m in members)
    if "vfio-missing" in lines:
        return PassthroughCheck(
            vf, device.pci, False, f"the host has no {VFIO_DRIVER} driver loaded", group, names
        )
    blocking = [
        f"{m[0]} ({m[1]})"
        for m in members
        if m[0] != device.pci and (m[1] if len(m) > 1 else "") not in _HARMLESS_DRIVERS
    ]
    if blocking:
        return PassthroughCheck(
            vf, device.pci, False,
            f"IOMMU group {group} is not viable: it also holds {', '.join(blocking)}",
            group, names,
        )  # fmt: skip
    return PassthroughCheck(
        vf, device.pci, True, f"IOMMU group {group} holds {', '.join(names)}", group, names
    )


def _rebind(pf: LinuxPf, vf: int, device: VfDevice, override: str, action: str) -> VfDevice:
    d = shlex.quote(f"/sys/bus/pci/devices/{device.pci}")
    pci = shlex.quote(device.pci)
    pf.run(
        f"echo {shlex.quote(override)} > {d}/driver_override && "
        f"{{ [ ! -e {d}/driver ] || echo {pci} > {d}/driver/unbind; }} && "
        f"echo {pci} > /sys/bus/pci/drivers_probe",
        action=action,
        vf=vf,
        setting="driver_override",
    )
    return pf.vf_device(vf)


def bind_vfio(pf: LinuxPf, vf: int) -> VfDevice:
    """Give the VF to vfio-pci (``driver_override``); verified by the driver it ends up with
    and by its ``/dev/vfio/<group>`` node."""
    check = passthrough_check(pf, vf)
    if not check.possible:
        raise PfControlError(
            pf=pf.name, vf=vf, setting="driver_override", action=f"bind to {VFIO_DRIVER}",
            reason=NOT_SUPPORTED, detail=check.reason,
        )  # fmt: skip
    device = _rebind(pf, vf, pf.vf_device(vf), VFIO_DRIVER, f"bind to {VFIO_DRIVER}")
    node = f"/dev/vfio/{device.iommu_group}"
    present = pf.run(f"[ -c {node} ] && echo yes || echo no", action="look for " + node, vf=vf)
    if device.driver != VFIO_DRIVER or present.strip() != "yes":
        raise PfControlError(
            pf=pf.name, vf=vf, setting="driver_override", action=f"bind to {VFIO_DRIVER}",
            reason=NOT_APPLIED,
            detail=f"the VF is bound to {device.driver or 'no driver'}; {node}: {present.strip()}",
        )  # fmt: skip
    return device


def unbind_vfio(pf: LinuxPf, vf: int) -> VfDevice:
    """Take the VF back from vfio-pci: clear ``driver_override`` and let the kernel probe
    the VF's own driver; verified by that driver holding it again."""
    device = _rebind(pf, vf, pf.vf_device(vf), "", f"unbind from {VFIO_DRIVER}")
    if device.driver in (None, VFIO_DRIVER):
        raise PfControlError(
            pf=pf.name, vf=vf, setting="driver_override", action=f"unbind from {VFIO_DRIVER}",
            reason=NOT_APPLIED, detail=f"the VF is bound to {device.driver or 'no driver'}",
        )  # fmt: skip
    return device
