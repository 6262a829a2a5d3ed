"""QEMU's own account of a guest: QMP events, read as they come, as hypervisor events.

One thread per QEMU instance reads its event monitor (relayed over SSH) and turns
each QMP event into a ``HypervisorEvent`` stamped with QEMU's own timestamp (the
host's clock): the failover handshake (``FAILOVER_NEGOTIATED``), the primary's
unplug request and eject (``UNPLUG_PRIMARY``, ``DEVICE_DELETED``), every migration
state (``MIGRATION``: setup, wait-unplug, active, device, completed, failed,
cancelled), the guest's stop and resume (``STOP``, ``RESUME``). Beside it, the
guest kernel's own serial port (``bench.qemu.kernel_log``) adds the moments
net_failover takes and lets go of the primary (``primary-registered``,
``primary-unregistered``), read by a watcher on the host that also steers the guest's
MAC to the right TAP at that moment (their details say how that went); it is the one
writer of that steering while it runs (:meth:`QemuMonitor.steer`). Waiters block on a
condition until an event they want arrives, with a deadline. Events carry the QEMU
host's clock (QMP's stamp, or when the watcher read the kernel's line), put on the
controller's: the same clock on namespace hosts; on a lab host, less the offset
between the two clocks measured when the monitor connects (``clock_offset``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from bench.errors import HostError, LabError
from bench.hypervisor.interface import HypervisorEvent
from bench.qemu.failover_vm import PRIMARY_ID, VmFiles
from bench.qemu.kernel_log import WATCHER_ANSWER, KernelLogReader, watch_command
from bench.qemu.qmp import QmpClient, QmpError
from bench.qemu.remote import open_socket
from bench.ssh import SshHost

#: QMP migration states -> the bench's event names (shared with the emulated hypervisor
#: where the step is the same: ``stop-and-copy-start``, ``resumed``).
_MIGRATION_STATES = {
    "setup": "migration-setup",
    "wait-unplug": "wait-unplug",
    "active": "migration-active",
    "device": "migration-device",
    "pre-switchover": "migration-pre-switchover",
    "completed": "migration-completed",
    "failed": "migration-failed",
    "cancelling": "migration-cancelling",
    "cancelled": "migration-cancelled",
}


def event_name(message: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The bench's name and details for QMP event ``message``; None for events it ignores."""
    kind = message.get("event")
    data = message.get("data") or {}
    if kind == "MIGRATION":
        name = _MIGRATION_STATES.get(str(data.get("status")))
        return (name, {}) if name else None
    if kind == "STOP":
        return "stop-and-copy-start", {}
    if kind == "RESUME":
        return "resumed", {}
    if kind == "FAILOVER_NEGOTIATED":
        return "failover-negotiated", {"device": data.get("device-id")}
    if kind == "UNPLUG_PRIMARY":
        return "unplug-primary", {"device": data.get("device-id")}
    if kind == "DEVICE_DELETED" and data.get("device") == PRIMARY_ID:
        return "primary-ejected", {}
    return None


def _stamp(message: dict[str, Any], clock_offset: float = 0.0) -> float:
    """When QEMU says the event happened, on the controller's clock (``clock_offset``:
    the host's clock minus the controller's); when it was read, if QEMU gave no stamp."""
    stamp = message.get("timestamp") or {}
    seconds, micros = stamp.get("seconds"), stamp.get("microseconds")
    if isinstance(seconds, int) and isinstance(micros, int) and seconds > 0:
        return seconds + micros / 1e6 - clock_offset
    return time.time()


@dataclass(frozen=True)
class Steering:
    """What the host's watcher steers: ``mac`` to ``standby_tap`` or ``primary_port`` on
    the host bridge, from the start if ``on``; ``vf``: the PF netdev and VF number of a
    real VF primary (its MAC moves too)."""

    mac: str
    standby_tap: str
    primary_port: str
    on: bool
    vf: tuple[str, int] | None = None


class QemuMonitor:
    """Events of one QEMU instance, from when the monitor connected; use as a context
    manager or call :meth:`close`."""

    def __init__(
        self,
        host: SshHost,
        host_name: str,
        files: VmFiles,
        on_event: Callable[[HypervisorEvent], None] | None = None,
        steering: Steering | None = None,
        *,
        clock_offset: float = 0.0,
    ) -> None:
        self.host_name = host_name
        self.files = files
        self.clock_offset = clock_offset
        self.events: list[HypervisorEvent] = []
        self._on_event = on_event
        self._changed = threading.Condition()
        self._closed = False
        try:
            channel = open_socket(host, str(files.qmp_events))
            self._client = QmpClient(files.qmp_events, timeout=10.0, stream=channel)
        except (QmpError, OSError) as err:
            raise LabError(f"{host_name}: QMP events of {files.name}: {err}") from None
        channel.settimeout(0.5)
        self._thread = threading.Thread(target=self._read, name=f"qmp-{files.name}", daemon=True)
        self._thread.start()
        self._kernel: KernelLogReader | None = None
        # connected before the monitor is used: the guest's words before that are lost
        with contextlib.suppress(OSError, HostError, LabError):  # none: ask the guest instead
            path = str(files.kernel_log_socket)
            command = (
                watch_command(
                    path,
                    steering.mac,
                    steering.standby_tap,
                    steering.primary_port,
                    steering.on,
                    vf=steering.vf,
                )
                if steering is not None
                else watch_command(path, "-", "-", "-", False)  # the words alone
            )
            self._kernel = KernelLogReader(
                open_socket(host, path, connected=True, command=command),
                files.name,
                self._from_kernel,
                clock_offset=clock_offset,
            )
        self._steering = steering
        self._seq = 0

    @property
    def hears_kernel(self) -> bool:
        """Whether the guest kernel's primary events arrive (else ask the guest); not once
        QEMU's own monitor has gone (QEMU with it, or the SSH connection)."""
        return self._kernel is not None and self._kernel.reading and not self._closed

    def _from_kernel(self, name: str, details: dict[str, Any], t: float) -> None:
        self._add(HypervisorEvent(t, self.host_name, name, details), log=name != WATCHER_ANSWER)

    def _ask(self, request: str, timeout: float = 5.0) -> HypervisorEvent | None:
        """The watcher's answer to ``request``; None if no watcher steers here (none, or
        it has ended); LabError if it does not answer in time."""
        kernel = self._kernel
        if self._steering is None or kernel is None or not kernel.reading:
            return None
        deadline = time.monotonic() + timeout
        with self._changed:
            self._seq += 1
            seq = str(self._seq)
            try:
                kernel.ask(request, self._seq)
            except OSError:
                return None  # the watcher's channel is gone: nothing on the host steers
            while True:
                for event in reversed(self.events):
                    if event.name == WATCHER_ANSWER and event.details.get("seq") == seq:
                        return event
                if time.monotonic() > deadline or not kernel.reading or self._closed:
                    raise LabError(
                        f"{self.files.name} on {self.host_name}: the host's steering watcher "
                        f"did not answer {request!r}"
                    )
                self._changed.wait(0.05)  # the reader's end wakes no one: look again soon

    def set_steering(self, on: bool) -> None:
        """Turn the host watcher's steering on or off (turned on, it moves the guest's MAC
        where the kernel's last word puts it); returns once it has answered."""
        answer = self._ask("on" if on else "off")
        if answer is not None and answer.details.get("steer_error"):
            raise LabError(f"{self.host_name}: {answer.details['steer_error']}")

    def steer(self, to: str) -> float | None:
        """Have the host watcher steer to ``to`` (``primary``/``standby``), unless a word of
        the kernel's it heard says otherwise (newer than any look of the controller's):
        when the guest's MAC got where it is, or None if no watcher steers here."""
        answer = self._ask(f"steer {to}")
        if answer is None or answer.details.get("steered") is None:
            return None
        if answer.details.get("steer_error"):
            raise LabError(f"{self.host_name}: {answer.details['steer_error']}")
        return answer.t

    def _read(self) -> None:
        while not self._closed:
            try:
                message = self._client.receive()
            except TimeoutError:
                continue
            except (QmpError, OSError, ValueError):
                break
            named = event_name(message)
            if named is None:
                continue
            stamp = _stamp(message, self.clock_offset)
            self._add(HypervisorEvent(stamp, self.host_name, named[0], named[1]))
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _add(self, event: HypervisorEvent, log: bool = True) -> None:
        """Keep ``event`` for waiters; ``log``: also hand it on (the guest's event log)."""
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        if log and self._on_event is not None:
            self._on_event(event)

    @property
    def listening(self) -> bool:
        """Whether it still reads QEMU's events (its SSH relay may have gone)."""
        return not self._closed

    def wait_for(
        self, names: AbstractSet[str], deadline: float, since: float = 0.0
    ) -> HypervisorEvent:
        """The first event named in ``names`` at or after ``since`` (epoch seconds);
        TimeoutError at ``deadline`` (monotonic)."""
        with self._changed:
            while True:
                for event in self.events:
                    if event.name in names and event.t >= since:
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    what = "its monitor closed" if self._closed else "the deadline passed"
                    raise TimeoutError(
                        f"{self.files.name} on {self.host_name}: none of {sorted(names)} "
                        f"came ({what}); saw {[e.name for e in self.events]}"
                    )
                self._changed.wait(remaining)

    def close(self) -> None:
        self._closed = True
        if self._kernel is not None:
            self._kernel.close()
        with contextlib.suppress(OSError):
            self._client.close()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> QemuMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
