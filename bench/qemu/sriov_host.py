"""The QEMU SR-IOV lab host: a guest with an ``igb`` NIC (Intel 82576, SR-IOV), booted from
the image of ``sriov_host_image`` and reached only over SSH, like a lab server.

Machine: q35 with an emulated Intel IOMMU (``intel_iommu=on``), so VFs get IOMMU groups
and vfio-pci can take them; the igb PF sits behind a PCIe root port, so it is always
``0000:01:00.0`` and its VFs ``0000:01:10.<2n>``. Both NICs use QEMU's user-mode network
with ``restrict=on``: the guest can reach nothing outside QEMU; the only way in is the
host forward of its sshd on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import HostError, LabError
from bench.qemu.accel import Accelerator, usable_accelerator
from bench.qemu.process import QemuProcess
from bench.qemu.sriov_host_image import CLIENT_KEY, KNOWN_HOSTS, READY_LINE
from bench.ssh import SshEndpoint, SshHost

#: The igb PF's PCI address (behind root port ``rp-igb``, bus 01).
PF_PCI_ADDRESS = "0000:01:00.0"
#: Default guest memory (MiB): the kernel, an initramfs in RAM and a few VFs.
MEMORY_MB = 512


@dataclass(frozen=True)
class SriovHostConfig:
    """How to boot one SR-IOV host."""

    name: str
    image_dir: Path
    work_dir: Path
    #: 127.0.0.1 port forwarded to the guest's sshd (0: pick a free one).
    ssh_port: int = 0
    memory_mb: int = MEMORY_MB
    #: Virtual CPUs (the hypervisor variant, running a nested guest, wants 2).
    smp: int = 1
    #: ``None``: probe (KVM when it really runs, else TCG).
    accel: Accelerator | None = None
    #: Stop QEMU if the controller dies (test sessions; a lab's host outlives ``up``).
    die_with_controller: bool = False


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def qemu_arguments(config: SriovHostConfig, accel: Accelerator, port: int) -> list[str]:
    """QEMU's command line (without the QMP and serial options the process adds)."""
    image = config.image_dir
    if accel == "kvm":
        machine, iommu = "q35,accel=kvm,kernel-irqchip=split", "intel-iommu,intremap=on"
    else:
        machine, iommu = "q35,accel=tcg", "intel-iommu,intremap=off"
    return [
        "-name", f"npabench-{config.name},process=npabench-{config.name}",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", machine, "-cpu", "max", "-smp", str(config.smp), "-m", str(config.memory_mb),
        "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
        "-append", "console=ttyS0 intel_iommu=on panic=-1 quiet",
        "-device", iommu,
        "-netdev", f"user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=mgmt",
        "-device", "pcie-root-port,id=rp-igb,chassis=1",
        "-netdev", "user,id=data,restrict=on",
        "-device", "igb,bus=rp-igb,netdev=data",
        "-pidfile", str(config.work_dir / f"{config.name}.pid"),
    ]  # fmt: skip


@dataclass
class RunningSriovHost:
    """A booted SR-IOV host: its QEMU process and how to reach its sshd."""

    process: QemuProcess
    endpoint: SshEndpoint
    accel: Accelerator
    boot_seconds: float

    def stop(self) -> None:
        self.process.stop()


def _wait_for_console(process: QemuProcess, deadline: float) -> None:
    while True:
        with contextlib.suppress(OSError):
            if READY_LINE in process.console_log.read_text(errors="replace"):
                return
        if not process.alive():
            raise LabError(f"{process.name}: QEMU exited while booting: {process.log_tail()}")
        if time.monotonic() > deadline:
            raise LabError(
                f"{process.name}: sshd not started before the deadline; "
                f"see the console log {process.console_log}"
            )
        time.sleep(0.1)


def _wait_for_ssh(endpoint: SshEndpoint, process: QemuProcess, deadline: float) -> None:
    """Log in once (the bench's own driver) to prove the host answers as a lab server."""
    while True:
        try:
            with SshHost(endpoint, connect_timeout=5.0) as host:
                host.run("true", timeout=10.0, check=True)
                return
        except HostError as err:
            if not process.alive() or time.monotonic() > deadline:
                raise LabError(
                    f"{process.name}: no SSH login at {endpoint.display_address}: {err}"
                ) from None
            time.sleep(0.2)


def boot_sriov_host(
    config: SriovHostConfig,
    timeout: float = 60.0,
    on_started: Callable[[QemuProcess], object] | None = None,
) -> RunningSriovHost:
    """Boot the host and wait until the bench can log in over SSH; stopped again on failure.

    ``on_started`` is called as soon as QEMU runs (a lab journals its PID there)."""
    started = time.monotonic()
    deadline = started + timeout
    accel = config.accel or usable_accelerator(config.image_dir / "vmlinuz")
    port = config.ssh_port or free_local_port()
    process = QemuProcess(
        qemu_arguments(config, accel, port),
        config.work_dir,
        config.name,
        die_with_controller=config.die_with_controller,
    )
    endpoint = SshEndpoint(
        host=config.name,
        address="127.0.0.1",
        port=port,
        user="root",
        key_file=config.image_dir / CLIENT_KEY,
        known_hosts=config.image_dir / KNOWN_HOSTS,
    )
    try:
        process.start()
        if on_started is not None:
            on_started(process)
        _wait_for_console(process, deadline)
        _wait_for_ssh(endpoint, process, deadline)
    except BaseException:
        process.stop()
        raise
    return RunningSriovHost(process, endpoint, accel, time.monotonic() - started)
