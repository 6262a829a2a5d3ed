"""The emulated hypervisor: guests of emulated hosts, their vmxnet3 devices and migrations.

A guest's device (``nic_emulators.vmxnet3``) is the hypervisor side on its
host; this class drives those devices over their control sockets. A live
migration starts a second device for the guest on the destination host (its
files tagged ``m<n>``, listening for the migration stream on the host's
management address), tells the source device to ``migrate`` there, and when
the guest has moved, stops the source device and records the guest's new
placement in the lab's journal (``LabState.placement``), which every later
``Lab`` call follows. A failed or cancelled migration stops the destination
device instead; the guest never stopped running on the source.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench.errors import LabError, UsageError
from bench.hypervisor.interface import HypervisorEvent, MigrationResult, Outcome
from bench.hypervisor.placement import check_destination, nic_at
from bench.hypervisor.registry import register
from bench.lab import Lab
from bench.lab.data_path import start_device, start_shell, wait_all_ready
from bench.lab.processes import is_running, stop_process
from bench.lab.state import Resource
from bench.topology import Guest
from nic_emulators.config import guest_run_dir
from nic_emulators.control import ControlClient, ControlError

#: How long a destination device may take to start.
DEVICE_START_S = 20.0
#: Deadline for a guest's device to finish a switch it is in before a migration starts.
IDLE_WAIT_S = 10.0

_JOURNAL = threading.Lock()


@register("emulated")
class EmulatedHypervisor:
    """The hypervisor of a lab's emulated hosts (one per ``Lab``)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.limits = lab.topology.limits

    # -- looking ------------------------------------------------------------------

    def host_of(self, guest: str) -> str:
        return self.lab.guest_host(guest)

    def _call(self, guest: str, op: str, /, timeout: float | None = None, **args: Any) -> Any:
        with self.lab.guest_control(guest) as device:
            return device.call(op, timeout=timeout, **args)

    def status(self, guest: str) -> dict[str, Any]:
        status: dict[str, Any] = self._call(guest, "status")
        return status

    def close(self) -> None:
        """Nothing held open: every call opens its own control connection."""

    def events(self, guest: str) -> list[HypervisorEvent]:
        return [HypervisorEvent.from_json(e) for e in self._call(guest, "events")["events"]]

    # -- guests and VFs -------------------------------------------------------------

    def _processes(self, guest: str) -> list[Resource]:
        names = {f"vmxnet3 {guest}", f"shell {guest}"}
        return [r for r in self.lab.state.resources if r.kind == "process" and r.name in names]

    def stop_guest(self, guest: str) -> None:
        """Stop the guest's driver and device (its VF goes back to its NIC's pool)."""
        for resource in self._processes(guest):  # the shell first: it is the guest
            if resource.name.startswith("shell "):
                stop_process(resource)
        for resource in self._processes(guest):
            stop_process(resource)
            with _JOURNAL:
                self.lab.state.forget(resource)

    def start_guest(self, guest: str) -> None:
        """Start the guest's device and driver on the host it is placed on."""
        if self._processes(guest):
            raise UsageError(f"guest {guest} is running; stop it first")
        spec = self.lab.guest_at(guest)
        topology, state = self.lab.topology, self.lab.state
        deadline = time.monotonic() + DEVICE_START_S
        with _JOURNAL:
            device = start_device(topology, state, spec)
        wait_all_ready([device], deadline)
        with _JOURNAL:
            shell = start_shell(topology, state, spec)
        wait_all_ready([shell], deadline)

    def suspend(self, guest: str) -> None:
        self._call(guest, "suspend")

    def resume(self, guest: str) -> None:
        self._call(guest, "resume")

    def revoke_vf(self, guest: str, *, surprise: bool = False) -> None:
        if not surprise:
            self._call(guest, "switch", to="emulation", reason="VF revoked")
            return
        vf = self.status(guest).get("vf")
        if vf is None:
            raise UsageError(f"guest {guest} has no VF to take away")
        with self.lab.guest_nic(guest) as nic:
            nic.call("VF_REMOVE", vf=vf)

    def offer_vf(self, guest: str) -> None:
        with self.lab.guest_nic(guest) as nic:
            for vf in nic.call("STATUS")["vfs"]:
                if vf["state"] == "absent":
                    nic.call("VF_RESTORE", vf=vf["vf"])
        if self.status(guest)["mode"] == "passthrough":
            return
        try:
            self._call(guest, "switch", to="passthrough")
        except ControlError as err:
            if err.code != "EBUSY":  # busy: the device is taking the restored VF back itself
                raise

    # -- live migration ---------------------------------------------------------------

    def migrate(
        self, guest: str, destination: str, *, fail_at_destination: bool = False
    ) -> MigrationResult:
        lab = self.lab
        source = self.host_of(guest)
        placed = self._placement_at(guest, source, destination)
        self._wait_idle(guest)
        started_at = time.time()
        with _JOURNAL:
            lab.state.migrations += 1
            instance = f"m{lab.state.migrations}"
            lab.state.save()
        spec = self._spec_at(guest, placed)
        address = f"{lab.endpoint(destination).address}:0"
        source_device = self._device_resource(guest)
        with _JOURNAL:
            started = start_device(
                lab.topology,
                lab.state,
                spec,
                instance=instance,
                incoming=address,
                fail_incoming=fail_at_destination,
            )
        target = started.process
        socket = guest_run_dir(lab.state.directory, guest) / f"vmx-{instance}.sock"
        asked = False  # until the source is asked to migrate, the guest cannot have moved
        try:
            wait_all_ready([started], time.monotonic() + DEVICE_START_S)
            with ControlClient(socket) as incoming:
                listening = str(incoming.call("status")["incoming"])
            asked = True
            answer = self._run_source(guest, listening, str(socket))
        except BaseException:
            if asked and self._took_over(socket, target):  # it lives on the destination now
                self._moved(guest, source_device, placed, instance)
            else:
                self._drop(target)
            raise
        outcome: Outcome = answer["outcome"]
        reason = str(answer.get("reason") or "")
        # The guest's driver follows its device socket: where it went decides which device
        # stays, whatever the source concluded (a hand-over it did not see still happened).
        if outcome != "completed" and self._took_over(socket, target):
            outcome, reason = "completed", f"the guest moved, though the source said: {reason}"
        if outcome == "completed":
            self._moved(guest, source_device, placed, instance)
            status = self._settle(guest)
            events = _merge(answer["events"], self._call(guest, "events")["events"])
        else:
            self._drop(target)
            status = self.status(guest)
            events = _merge(answer["events"], [])
        return MigrationResult(
            guest=guest,
            source=source,
            destination=destination,
            outcome=outcome,
            reason=reason,
            host=self.host_of(guest),
            mode=str(status["mode"]),
            mode_reason=str(status.get("reason") or ""),
            plugin=status.get("plugin"),
            started_at=started_at,
            finished_at=time.time(),
            events=events,
        )

    def _moved(
        self, guest: str, source_device: Resource, placed: dict[str, Any], instance: str
    ) -> None:
        """The guest runs on its destination: journal where it is, then stop its old device."""
        with _JOURNAL:
            self.lab.state.placement[guest] = {**placed, "instance": instance}
            self.lab.state.save()
        self._drop(source_device)

    @staticmethod
    def _took_over(socket: Path, target: Resource) -> bool:
        """The destination renamed its socket over the guest's: the guest's driver is there."""
        return not socket.exists() and is_running(target)

    def cancel_migration(self, guest: str) -> None:
        self._call(guest, "cancel-migration")

    def _run_source(self, guest: str, listening: str, socket: str) -> dict[str, Any]:
        """Tell the source device to migrate; its answer comes when the migration ended."""
        bound = float(self.limits.migration_timeout_s)
        try:
            answer: dict[str, Any] = self._call(
                guest,
                "migrate",
                timeout=bound,
                to=listening,
                socket=socket,
                release_timeout_s=float(self.limits.vf_release_timeout_s),
            )
        except ControlError as err:
            if err.code != "ETIMEDOUT" and "timed out" not in str(err):
                raise LabError(
                    f"migration of {guest}: the source device failed ({err.code}): {err}"
                ) from err
            try:
                self.cancel_migration(guest)
            except (ControlError, LabError) as again:
                err.add_note(f"cancelling it failed too: {again}")
            raise LabError(
                f"migration of {guest} did not end within migration_timeout_s {bound:g} s; "
                "cancelled"
            ) from err
        return answer

    def _placement_at(self, guest: str, source: str, destination: str) -> dict[str, Any]:
        """Where on ``destination`` the guest's device goes: the NIC it takes VFs from there
        (its own ``nic:`` if that host has it, else the host's first NIC with VFs) and its
        vSwitch uplink (kept if that host has the interface). Refuses a destination that
        cannot carry the guest."""
        topology = self.lab.topology
        check_destination(topology, guest, source, destination)
        host = topology.host(destination)
        if host.backend != "emulated":
            raise UsageError(
                f"cannot migrate {guest} to {destination}: a {host.backend} host, and this is "
                "the emulated hypervisor"
            )
        spec = topology.guest(guest)
        nic = nic_at(topology, guest, destination)
        uplink = spec.vswitch_uplink
        if uplink is not None and not any(i.name == uplink for i in host.interfaces):
            uplink = None
        return {"host": destination, "nic": nic.name if nic else None, "vswitch_uplink": uplink}

    def _spec_at(self, guest: str, placed: dict[str, Any]) -> Guest:
        spec = self.lab.topology.guest(guest)
        return spec.model_copy(
            update={
                "host": placed["host"],
                "nic": placed["nic"],
                "vswitch_uplink": placed["vswitch_uplink"],
                "switch": self.lab.topology.guest_switch(spec),
            }
        )

    def _wait_idle(self, guest: str) -> None:
        """A switch in progress (a VF coming back, say) finishes before the migration."""
        deadline = time.monotonic() + IDLE_WAIT_S
        while (busy := self.status(guest).get("busy")) and time.monotonic() < deadline:
            time.sleep(0.01)
        if busy:
            raise LabError(f"guest {guest}'s device is still busy with a {busy}; not migrating")

    def _settle(self, guest: str) -> dict[str, Any]:
        """After the hand-over the destination offers a VF: wait until it is taken (or
        refused), within ``passthrough_return_s``; the status then."""
        deadline = time.monotonic() + float(self.limits.passthrough_return_s)
        while True:
            status = self.status(guest)
            settled = not status.get("busy") and status.get("reason") not in (
                "waiting for the guest driver",
                "incoming migration",
            )
            if settled or time.monotonic() >= deadline:
                return status
            time.sleep(0.01)

    def _device_resource(self, guest: str) -> Resource:
        found = [r for r in self._processes(guest) if r.name.startswith("vmxnet3 ")]
        if not found:
            raise LabError(f"guest {guest} has no device process in the journal")
        return found[-1]

    def _drop(self, resource: Resource) -> None:
        stop_process(resource)
        if not is_running(resource):  # one that survived stays journalled, for the teardown
            with _JOURNAL:
                self.lab.state.forget(resource)


def _merge(*lists: list[dict[str, Any]]) -> tuple[HypervisorEvent, ...]:
    """Events of the source and the destination, each once, in time order."""
    seen: dict[tuple[float, str, str], HypervisorEvent] = {}
    for events in lists:
        for data in events:
            event = HypervisorEvent.from_json(data)
            seen.setdefault((event.t, event.host, event.name), event)
    return tuple(sorted(seen.values(), key=lambda e: e.t))
