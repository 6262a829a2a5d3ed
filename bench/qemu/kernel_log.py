"""The guest kernel's own word on its primary, read off a second serial port as it happens.

The guest's kernel writes its console (``console=ttyS1``, at info level from the start
of the guest's boot script) to a serial port of its own, which QEMU gives a Unix
socket and a log file (:func:`kernel_log_arguments`). ``net_failover`` prints a line
the moment it takes or lets go of a slave::

    net_failover virtio0 eth0: failover primary slave:eth2 registered
    net_failover virtio0 eth0: failover primary slave:eth2 unregistered

From *registered* on, it drops what arrives on the standby; from *unregistered* on,
the standby carries the guest again. So these lines, not a poll of the guest's
sysfs, are when the host must steer. A small program on the host
(``bench.qemu.steering_watch``, run over SSH by :func:`watch_command`) reads the port,
moves the guest's MAC to the right TAP the moment such a line comes (no round trip
to the controller: a PF reacts to its VF driver the same way) and reports each as a
JSON line; :class:`KernelLogReader` hands each on as an event stamped when the host
read the line (the host's clock, as QMP's events), with how steering went. The
kernel writes the line synchronously on the serial port, so nothing in the guest's
user space has to run first (under TCG a busy guest answers its console late).
Also on that port: the guest's boot script (``rcS: ...`` lines, failed ``insmod``).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko

from bench.qemu import steering_watch
from bench.qemu.console import serial_port_arguments

#: The chardev id of the kernel's serial port in QEMU's command line (ttyS1).
CHARDEV_ID = "klog0"
#: The kernel command line's console for it.
KERNEL_CONSOLE = "ttyS1"

#: Between the stamps of two events read at once: each is later than the one before.
STAMP_STEP_S = 1e-5

#: The events it gives (also what a waiter for "any change of the primary" wants).
PRIMARY_EVENTS = frozenset({"primary-registered", "primary-unregistered"})
#: The watcher's answer to a request of the controller's (not a step of the guest's: kept
#: off its log); its details carry the request's ``seq``.
WATCHER_ANSWER = "watcher-answer"


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


def watch_command(
    socket_path: str,
    mac: str,
    standby_tap: str,
    primary_port: str,
    steering: bool,
    *,
    vf: tuple[str, int] | None = None,
) -> str:
    """The host command that watches the kernel's serial port ``socket_path`` and steers
    ``mac`` between the standby's TAP and the primary's port (``steering``: from the
    start); ``vf``: the PF netdev and VF number of a real VF primary."""
    program = Path(steering_watch.__file__).read_text()
    arguments = [socket_path, mac, standby_tap, primary_port, "on" if steering else "off"]
    if vf is not None:
        arguments += [vf[0], str(vf[1])]
    return f"exec python3 -u -c {shlex.quote(program)} {shlex.join(arguments)}"


def primary_event(line: bytes) -> tuple[str, dict[str, Any]] | None:
    """The event a kernel line tells of (``primary-registered``/``-unregistered``), if any."""
    found = steering_watch.WORD.search(line)
    if found is None:
        return None
    netdev, change = found.group(1).decode(errors="replace"), found.group(2).decode()
    return f"primary-{change}", {"netdev": netdev}


class KernelLogReader:
    """A thread reading the host watcher's reports (``bench.qemu.steering_watch``) from
    ``channel``; ``sink(name, details, t)`` gets each primary event (with ``steered``,
    ``steer_ms`` and ``steer_error`` when the watcher steered) and each answer to
    :meth:`ask` (``watcher-answer``), stamped on the controller's clock (``clock_offset``:
    the host's clock minus the controller's). Stops at :meth:`close` or when the channel
    ends."""

    def __init__(
        self,
        channel: paramiko.Channel,
        label: str,
        sink: Callable[[str, dict[str, Any], float], None],
        clock_offset: float = 0.0,
    ) -> None:
        self._channel = channel
        self._sink = sink
        self._offset = clock_offset
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
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                report = _report(line)
                if report is None:
                    continue
                name, details, t = report
                # reports of one read keep their order in time (a waiter's ``since``)
                stamp = max(t - self._offset, last + STAMP_STEP_S)
                self._sink(name, details, stamp)
                last = stamp
            pending = pending[-4096:]  # a line never grows without bound
        self._closed = True

    def ask(self, request: str, seq: int) -> None:
        """Send the watcher ``request`` (``on``, ``off``, ``steer primary|standby``); it
        answers with ``watcher-answer`` carrying ``seq``. OSError if the channel is gone."""
        self._channel.sendall(f"{request} {seq}\n".encode())

    @property
    def reading(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._channel.close()
        self._thread.join(timeout=2.0)


def _report(line: bytes) -> tuple[str, dict[str, Any], float] | None:
    """A watcher's JSON line as (event name, details, its stamp); None for anything else
    (whatever a host's shell may print before it is skipped)."""
    try:
        said = json.loads(line[line.find(b"{") :])
    except ValueError:
        return None
    if not isinstance(said, dict) or not isinstance(said.get("t"), int | float):
        return None
    t = float(said.pop("t"))
    if "seq" in said:
        return WATCHER_ANSWER, said, t
    name = said.get("event")
    if name not in PRIMARY_EVENTS:
        return None
    details = {k: said[k] for k in ("netdev", "steered", "steer_ms", "steer_error") if k in said}
    return str(name), details, t
