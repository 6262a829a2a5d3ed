"""The guest kernel's own word on its primary, read off a second serial port as it happens.

The guest's kernel writes its console (``console=ttyS1``, at info level from the start
of the guest's boot script) to a serial port of its own, which QEMU gives a Unix
socket and a log file (:func:`kernel_log_arguments`). ``net_failover`` prints a line
the moment it takes or lets go of a slave::

    net_failover virtio0 eth0: failover primary slave:eth2 registered
    net_failover virtio0 eth0: failover primary slave:eth2 unregistered

From *registered* on, it drops what arrives on the standby; from *unregistered* on,
the standby carries the guest again. So these lines, not a poll of the guest's
sysfs, are when the host must steer: :class:`KernelLogReader` reads them (relayed
over SSH) and hands each on as an event stamped when the bench heard it (the
controller's clock; serial port, relay and SSH latency included: milliseconds). The
kernel writes the line synchronously on the serial port, so nothing in the guest's
user space has to run first (under TCG a busy guest answers its console late).
Also on that port: the guest's boot script (``rcS: ...`` lines, failed ``insmod``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from bench.qemu.console import serial_port_arguments

#: The chardev id of the kernel's serial port in QEMU's command line (ttyS1).
CHARDEV_ID = "klog0"
#: The kernel command line's console for it.
KERNEL_CONSOLE = "ttyS1"

#: Between the stamps of two events read at once: each is later than the one before.
STAMP_STEP_S = 1e-5

#: The events it gives (also what a waiter for "any change of the primary" wants).
PRIMARY_EVENTS = frozenset({"primary-registered", "primary-unregistered"})

_PRIMARY = re.compile(rb"failover primary slave:(\S+) (registered|unregistered)")


def kernel_log_socket(work_dir: Path, name: str) -> Path:
    return work_dir / f"{name}.kmsg.sock"


def kernel_log_file(work_dir: Path, name: str) -> Path:
    """Everything guest ``name``'s kernel wrote on its console, connected or not."""
    return work_dir / f"{name}.kmsg.log"


def kernel_log_arguments(work_dir: Path, name: str) -> list[str]:
    """QEMU options making the second serial port (``ttyS1``) a Unix socket server with a
    log file (after the console's ``-serial``: the order numbers the ports)."""
    return serial_port_arguments(
        CHARDEV_ID, kernel_log_socket(work_dir, name), kernel_log_file(work_dir, name), name
    )


def primary_event(line: bytes) -> tuple[str, dict[str, Any]] | None:
    """The event a kernel line tells of (``primary-registered``/``-unregistered``), if any."""
    found = _PRIMARY.search(line)
    if found is None:
        return None
    netdev, change = found.group(1).decode(errors="replace"), found.group(2).decode()
    return f"primary-{change}", {"netdev": netdev}


class KernelLogReader:
    """A thread reading a guest's kernel log from ``channel``; ``sink(name, details, t)``
    gets each primary event. Stops at :meth:`close` or when the channel ends."""

    def __init__(
        self,
        channel: paramiko.Channel,
        label: str,
        sink: Callable[[str, dict[str, Any], float], None],
    ) -> None:
        self._channel = channel
        self._sink = sink
        self._closed = False
        channel.settimeout(0.5)
        self._thread = threading.Thread(target=self._read, name=f"kmsg-{label}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        pending = b""
        last = 0.0
        while not self._closed:
            try:
                chunk = self._channel.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            arrived = time.time()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                event = primary_event(line)
                if event is not None:
                    # lines of one read keep their order in time (a waiter's ``since``)
                    stamp = max(arrived, last + STAMP_STEP_S)
                    self._sink(event[0], event[1], stamp)
                    last = stamp
            pending = pending[-4096:]  # a line never grows without bound
        self._closed = True

    @property
    def reading(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._channel.close()
        self._thread.join(timeout=2.0)
