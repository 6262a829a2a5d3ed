"""Lab hosts the bench boots itself (``qemu:`` in the topology): QEMU guests that are, to
everything after this, lab servers reached over SSH.

Each QEMU is journalled as a lab process, and runs in the lab's state directory, so a
``down``, a failed ``up`` or ``npabench cleanup`` stops it like any daemon of the lab
(after the real-NIC restore, which still needs its sshd).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import UsageError
from bench.lab.state import LabState, Resource
from bench.progress import Progress
from bench.topology import Host

if TYPE_CHECKING:
    from bench.qemu.process import QemuProcess


def boot_qemu_hosts(
    hosts: Sequence[Host], base: Path, state: LabState, progress: Progress, deadline: float
) -> None:
    """Boot every host with a ``qemu:`` section; return when each one's sshd answers."""
    # Imported here: bench.qemu uses bench.lab's process helpers, and bench.lab imports
    # its backends, this one among them.
    from bench.qemu.sriov_host import SriovHostConfig, boot_sriov_host

    for host in hosts:
        if host.qemu is None:
            continue
        if host.ssh is None or host.ssh.address != "127.0.0.1":
            raise UsageError(f"host {host.name}: a qemu: host is reached on ssh: address 127.0.0.1")
        config = SriovHostConfig(
            name=host.name,
            image_dir=(base / host.qemu.image).resolve(),
            work_dir=state.directory / "qemu" / host.name,
            ssh_port=host.ssh.port,
            memory_mb=host.qemu.memory_mb,
            smp=host.qemu.cpus,
        )
        if not (config.image_dir / "initrd.img").is_file():
            raise UsageError(
                f"host {host.name}: no image in {config.image_dir}; run `make qemu-sriov-image`"
            )
        progress(f"booting {host.name} (QEMU, igb SR-IOV NIC)")

        def journal(process: QemuProcess, name: str = host.name) -> None:
            state.record(Resource("process", f"qemu {name}", process.pid, process.start_ticks))

        running = boot_sriov_host(
            config, timeout=max(1.0, deadline - time.monotonic()), on_started=journal
        )
        progress(f"{host.name} up in {running.boot_seconds:.1f} s ({running.accel})")
