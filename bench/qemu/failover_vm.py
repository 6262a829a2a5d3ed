"""A failover guest's QEMU command line: q35, a virtio-net standby, a hidden primary.

The guest's one netdev is the ``net_failover`` master over two PCI NICs with the same
MAC: a ``virtio-net-pci,failover=on`` standby (the emulated path) and a primary on a
PCIe root port with ``failover_pair_id``. On an emulated host the primary is an
emulated vmxnet3 or e1000e standing in for the VF, with a TAP of its own; on a lab
host with a real SR-IOV PF it is the VF itself, given to QEMU through ``vfio-pci``
(its MAC is the PF's to set: ``ip link set PF vf N mac``). QEMU keeps the primary
hidden until the guest negotiates STANDBY (``FAILOVER_NEGOTIATED``), unplugs it when
a migration starts and plugs it again on the destination. ``romfile=`` keeps an
option ROM off the primary: with one, QEMU 7.2 fails migration ("Unknown ramblock").
The standby is a TAP on the host's guest bridge.

A guest without the failover feature (``nic_mode: emulation``, LM-10) has the virtio
NIC alone, without ``failover=on``. A destination host without a primary model (no
"VF" to give) starts the guest without the primary device (LM-03).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.qemu import console, kernel_log
from bench.qemu.accel import Accelerator
from bench.qemu.failover_image import kernel_command_line

#: QEMU device ids the bench addresses over QMP.
STANDBY_ID = "standby0"
PRIMARY_ID = "primary0"
PRIMARY_PORT = "rp-primary"
#: Guest memory (MiB): a kernel, an initramfs in RAM, two NICs.
MEMORY_MB = 256


@dataclass(frozen=True)
class VmFiles:
    """Where one QEMU instance of a guest keeps its sockets, logs and PID."""

    directory: Path
    name: str

    @property
    def qmp_events(self) -> Path:
        """The monitor the bench listens on for events (one client at a time)."""
        return self.directory / f"{self.name}.qmp"

    @property
    def qmp_commands(self) -> Path:
        """A second monitor, for one-off commands (status, quit) from any process."""
        return self.directory / f"{self.name}.qmp-cmd"

    @property
    def console_socket(self) -> Path:
        return console.console_socket(self.directory, self.name)

    @property
    def console_log(self) -> Path:
        return console.console_log(self.directory, self.name)

    @property
    def kernel_log_socket(self) -> Path:
        return kernel_log.kernel_log_socket(self.directory, self.name)

    @property
    def kernel_log(self) -> Path:
        return kernel_log.kernel_log_file(self.directory, self.name)

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / f"{self.name}.pid"


@dataclass(frozen=True)
class PrimaryVf:
    """A real VF given to the guest as its primary (``vfio-pci``)."""

    #: The PF's PCI address (as the topology names it) and its netdev on the host.
    pf_pci: str
    pf_netdev: str
    vf: int
    #: The VF's own PCI address (QEMU's ``host=``).
    pci: str


@dataclass(frozen=True)
class FailoverVm:
    """One QEMU instance of a guest on one host."""

    guest: str
    mac: str
    address: str  # the guest's IPv4 with prefix, e.g. 198.19.0.101/24
    standby_tap: str
    primary_tap: str
    #: The primary's QEMU model (vmxnet3, e1000e); None: no emulated primary on this host.
    primary_model: str | None
    #: False: a plain virtio NIC, no failover pair (a guest without the feature).
    failover: bool = True
    memory_mb: int = MEMORY_MB
    mtu: int = 1500
    #: A real VF as the primary (lab hosts); then ``primary_model`` is None.
    primary_vf: PrimaryVf | None = None

    @property
    def has_primary(self) -> bool:
        return self.failover and (self.primary_model is not None or self.primary_vf is not None)

    @property
    def taps(self) -> tuple[str, ...]:
        """The TAPs this instance needs on the host bridge (a VF primary has none)."""
        if self.primary_vf is not None:
            return (self.standby_tap,)
        return self.standby_tap, self.primary_tap

    @property
    def primary_port(self) -> str:
        """The bridge port that reaches the primary: its TAP, or for a VF the PF's netdev
        (the NIC's embedded switch takes it from there to the VF, by the VF's MAC)."""
        return self.primary_vf.pf_netdev if self.primary_vf is not None else self.primary_tap

    def describe_primary(self) -> str:
        if self.primary_vf is not None:
            vf = self.primary_vf
            return f"vfio-pci VF {vf.vf} ({vf.pci}) of PF {vf.pf_netdev}"
        return self.primary_model or "none"


def primary_device(vm: FailoverVm) -> dict[str, str]:
    """The primary as QMP ``device_add`` takes it (also its ``-device`` option)."""
    if vm.primary_vf is not None:
        return {
            "driver": "vfio-pci",
            "host": vm.primary_vf.pci,
            "id": PRIMARY_ID,
            "bus": PRIMARY_PORT,
            "failover_pair_id": STANDBY_ID,
            "romfile": "",
        }
    assert vm.primary_model is not None
    return {
        "driver": vm.primary_model,
        "id": PRIMARY_ID,
        "netdev": "pr",
        "mac": vm.mac,
        "bus": PRIMARY_PORT,
        "failover_pair_id": STANDBY_ID,
        "romfile": "",
    }


def _device_option(properties: dict[str, str]) -> str:
    driver = properties["driver"]
    rest = ",".join(f"{k}={v}" for k, v in properties.items() if k != "driver")
    return f"{driver},{rest}"


def qemu_arguments(
    vm: FailoverVm,
    image_dir: Path,
    files: VmFiles,
    accel: Accelerator,
    incoming: str | None = None,
) -> list[str]:
    """The whole command line after the binary; ``incoming`` (``tcp:IP:PORT``) makes this
    instance a migration destination."""
    standby = {
        "driver": "virtio-net-pci",
        "netdev": "sb",
        "id": STANDBY_ID,
        "mac": vm.mac,
        "host_mtu": str(vm.mtu),
        **({"failover": "on"} if vm.failover else {}),
        "romfile": "",  # no PXE ROM: the guest boots from -kernel (and a host may lack it)
    }
    argv = [
        "-name", f"npabench-{vm.guest},process=npabench-{vm.guest}",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-machine", f"q35,accel={accel}", "-cpu", "max", "-smp", "1",
        "-m", str(vm.memory_mb),
        "-kernel", str(image_dir / "vmlinuz"), "-initrd", str(image_dir / "initrd.img"),
        "-append", kernel_command_line(vm.guest, vm.address),
        "-netdev", f"tap,id=sb,ifname={vm.standby_tap},script=no,downscript=no",
        "-device", _device_option(standby),
        "-device", f"pcie-root-port,id={PRIMARY_PORT},chassis=1",
        "-qmp", f"unix:{files.qmp_events},server=on,wait=off",
        "-qmp", f"unix:{files.qmp_commands},server=on,wait=off",
        *console.console_arguments(files.directory, files.name),
        *kernel_log.kernel_log_arguments(files.directory, files.name),
        "-pidfile", str(files.pidfile),
        "-D", str(files.log),
        "-daemonize",
    ]  # fmt: skip
    if vm.has_primary and vm.primary_vf is None:
        argv += ["-netdev", f"tap,id=pr,ifname={vm.primary_tap},script=no,downscript=no"]
    if vm.has_primary:
        argv += ["-device", _device_option(primary_device(vm))]
    if incoming is not None:
        argv += ["-incoming", incoming]
    return argv
