"""Which accelerator QEMU can use here: KVM when it really runs a guest, TCG otherwise.

``/dev/kvm`` existing proves nothing: under nested virtualisation it can open fine and
then hang the first vCPU run forever. So the probe boots a real kernel under KVM, in a
child process with a deadline, and takes KVM only if that guest got as far as
rebooting (no root file system: the kernel panics and ``-no-reboot`` ends QEMU). The
answer is kept for the life of the controller process.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from pathlib import Path
from typing import Literal

from drivers.linux_pf import CommandHost

Accelerator = Literal["kvm", "tcg"]

#: How long a KVM boot-to-panic may take before KVM is called unusable (a working one: ~1-2 s).
PROBE_TIMEOUT_S = 6.0
#: Set to ``kvm`` or ``tcg`` to skip the probe.
ACCEL_ENV = "NPABENCH_QEMU_ACCEL"
QEMU_BINARY = "qemu-system-x86_64"


def probe_argv(kernel: str) -> list[str]:
    """The probe: boot ``kernel`` under KVM until it panics for want of a root (then
    ``-no-reboot`` ends QEMU with status 0)."""
    return [
        QEMU_BINARY, "-accel", "kvm", "-machine", "q35", "-m", "128", "-nodefaults",
        "-no-user-config", "-display", "none", "-no-reboot", "-kernel", kernel,
        "-append", "panic=-1 console=ttyS0 root=/dev/nonexistent",
    ]  # fmt: skip


def remote_accelerator(
    host: CommandHost, kernel: str, timeout: float = PROBE_TIMEOUT_S
) -> Accelerator:
    """The same answer for a lab host, probed there over SSH (``kernel``: its path on the
    host); ``timeout -s KILL`` ends a hung probe on the host itself."""
    forced = os.environ.get(ACCEL_ENV, "")
    if forced in ("kvm", "tcg"):
        return forced  # type: ignore[return-value]
    command = (
        "[ -r /dev/kvm ] && [ -w /dev/kvm ] || exit 3; "
        f"timeout -s KILL {timeout:g} {shlex.join(probe_argv(kernel))} >/dev/null 2>&1"
    )
    return "kvm" if host.run(command, timeout=timeout + 10).exit_status == 0 else "tcg"


@functools.cache
def usable_accelerator(kernel: Path, timeout: float = PROBE_TIMEOUT_S) -> Accelerator:
    """``kvm`` if a guest really runs under KVM on this machine, else ``tcg``."""
    forced = os.environ.get(ACCEL_ENV, "")
    if forced in ("kvm", "tcg"):
        return forced  # type: ignore[return-value]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    try:
        probe = subprocess.Popen(
            probe_argv(str(kernel)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return "tcg"
    try:
        return "kvm" if probe.wait(timeout) == 0 else "tcg"
    except subprocess.TimeoutExpired:
        return "tcg"
    finally:
        if probe.poll() is None:
            probe.kill()  # the probe's own child, by its handle; a hung vCPU dies with SIGKILL
            probe.wait()
