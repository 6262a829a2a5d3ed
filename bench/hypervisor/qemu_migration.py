"""One live migration of a failover guest between two hosts' QEMU processes.

1. A destination QEMU is started on the destination host (``-incoming defer``, its
   own TAPs, inbound frames steered to its standby) and told to listen on the
   host's management address; both QEMUs get the ``events`` migration capability.
2. ``migrate`` on the source. QEMU unplugs the primary (``UNPLUG_PRIMARY``, state
   ``wait-unplug``) and waits for the guest to eject it; once its net_failover has
   let go of it (the guest kernel's ``primary-unregistered``, else QEMU's
   ``DEVICE_DELETED``), inbound frames are steered to the source's standby
   (``emulation-active``). A guest that keeps its primary past
   ``limits.vf_release_timeout_s`` gets the migration cancelled (LM-06).
3. Pre-copy, then stop-and-copy: ``STOP`` on the source, ``RESUME`` on the
   destination; QEMU's own downtime figure (``query-migrate``) is logged beside.
4. Completed: the source QEMU is stopped and the guest placed on the destination,
   where QEMU plugs the primary again; once the guest's net_failover has it
   (``primary-registered``), frames are steered to it (``primary-steered``), then
   its link comes up (``passthrough-active``). Failed or cancelled: the destination QEMU is
   stopped, QEMU plugs the primary back on the source and the guest takes it.

``fail_at_destination`` (LM-05) kills the destination QEMU once the stream runs.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import TYPE_CHECKING, Any

from bench.errors import LabError
from bench.hypervisor.interface import HypervisorEvent, MigrationResult, Outcome
from bench.hypervisor.placement import check_destination
from bench.qemu.guests import MIGRATION_PORT, Instance, mode_reason
from bench.qemu.primary_asker import WORD_SLICE_S, PrimaryAsker

if TYPE_CHECKING:
    from bench.hypervisor.qemu import QemuHypervisor


_ENDED = {"migration-completed", "migration-failed", "migration-cancelled"}


class QemuMigration:
    def __init__(
        self, hv: QemuHypervisor, guest: str, destination: str, fail_at_destination: bool
    ) -> None:
        self.hv = hv
        self.guest = guest
        self.destination = destination
        self.fail_at_destination = fail_at_destination
        self.limits = hv.limits
        self.lab = hv.lab

    def run(self) -> MigrationResult:
        hv, guest = self.hv, self.guest
        source = hv.guests.current(guest)
        check_destination(self.lab.topology, guest, source.host, self.destination)
        source_monitor = hv.monitor(source)
        started = hv.record(guest, source.host, "migration-start", to=self.destination).t
        target = hv.guests.boot(hv.guests.next_instance(guest, self.destination), incoming="defer")
        outcome: Outcome = "failed"
        reason = ""
        had_primary = False
        try:
            hv.monitor(target)
            for instance in (source, target):
                hv.qmp(
                    instance,
                    "migrate-set-capabilities",
                    capabilities=[{"capability": "events", "state": True}],
                )
            # LM-05 fails the destination while the guest is stopped: QEMU pauses there
            hv.qmp(
                source,
                "migrate-set-capabilities",
                capabilities=[
                    {"capability": "pause-before-switchover", "state": self.fail_at_destination}
                ],
            )
            listen = self.lab.endpoint(self.destination).address
            uri = f"tcp:{listen}:{MIGRATION_PORT + target.number}"
            hv.qmp(target, "migrate-incoming", uri=uri)
            hv.migrating(guest, source)
            had_primary = hv.guests.net(source).primary is not None
            hv.qmp(source, "migrate", uri=uri)
            if had_primary:
                reason = self._release(source, started)
            if self.fail_at_destination and not reason:
                self._kill_destination(target, started)
            ended = source_monitor.wait_for(
                _ENDED, time.monotonic() + self.limits.migration_timeout_s, since=started
            )
            outcome = {
                "migration-completed": "completed",
                "migration-cancelled": "cancelled",
            }.get(ended.name, "failed")  # type: ignore[assignment]
            if outcome == "cancelled" and reason:
                outcome = "failed"  # the bench cancelled it: the guest kept its VF
            elif outcome == "failed":
                reason = reason or self._failure(source)
            elif outcome == "cancelled":
                reason = "cancelled"
        except TimeoutError as err:
            reason = f"the migration did not end within limits.migration_timeout_s: {err}"
            hv.cancel_on(source)
        except BaseException:
            hv.drop_monitor(target)
            hv.guests.stop(target)
            raise
        finally:
            hv.migrating(guest, None)
        if outcome == "completed":
            here = self._completed(source, target)
        else:
            here = self._rolled_back(source, target, had_primary, started)
        net = hv.guests.net(here)
        return MigrationResult(
            guest=guest,
            source=source.host,
            destination=self.destination,
            outcome=outcome,
            reason=reason,
            host=here.host,
            mode=net.mode,
            mode_reason=mode_reason(here, net.reason()),
            plugin=net.primary.driver if net.primary else None,
            started_at=started,
            finished_at=time.time(),
            events=tuple(hv.events(guest)),
        )

    # -- steps ----------------------------------------------------------------------

    def _release(self, source: Instance, started: float) -> str:
        """Wait for the guest to eject its primary; steer to the standby. The reason to
        give up (the bench then cancels), or '' once it is released."""
        hv = self.hv
        bound = float(self.limits.vf_release_timeout_s)
        monitor = hv.monitor(source)
        try:
            asked = monitor.wait_for({"unplug-primary"}, time.monotonic() + bound, since=started)
            hv.record(self.guest, source.host, "vf-release-requested")
            ejected, word = self._ejected(source, asked.t, time.monotonic() + bound)
        except TimeoutError:
            hv.record(self.guest, source.host, "vf-release-timeout", bound_s=bound)
            hv.cancel_on(source)
            return (
                f"the guest did not release its VF (eject the primary) within "
                f"limits.vf_release_timeout_s = {bound:g} s; migration cancelled"
            )
        if ejected:
            at = hv.steered(source, "standby", word)
            hv.guests.vf_left(source)  # QEMU goes on only once the device is deleted
            done = hv.record(
                self.guest, source.host, "emulation-active", stamp=at, reason="migration"
            )
            hv.record(
                self.guest,
                source.host,
                "vf-release-done",
                waited_ms=round((done.t - asked.t) * 1000, 3),
            )
        return ""

    def _ejected(
        self, source: Instance, asked: float, deadline: float
    ) -> tuple[bool, HypervisorEvent | None]:
        """Watch the guest let go of its primary: its kernel says so the moment net_failover
        unregisters it (QEMU itself notices only at its next 250 ms look in wait-unplug,
        and says so by leaving it); the guest is asked too, in the background, in case
        that word is not heard (an answer is slow while it ejects).
        (True, the kernel's word if heard) once it has; (False, None) if the migration
        ended first; TimeoutError at ``deadline``."""
        monitor = self.hv.monitor(source)
        released = {"primary-unregistered", "primary-ejected", "migration-active"}
        ended = {*_ENDED, "migration-cancelling"}
        holds = functools.partial(self.hv.guests.primary_enslaved, source)
        with PrimaryAsker(holds, asked, lambda: monitor.hears_kernel, want=False) as asker:
            while True:
                recent = [e for e in monitor.events if e.t >= asked]
                seen = {e.name for e in recent}
                if seen & ended:
                    return False, None  # cancelled meanwhile: QEMU waits for the eject itself
                if seen & released or asker.found is not None:
                    word = next((e for e in recent if e.name == "primary-unregistered"), None)
                    return True, word
                if asker.error is not None:
                    raise asker.error
                if time.monotonic() > deadline:
                    raise TimeoutError("primary not ejected")
                with contextlib.suppress(TimeoutError):
                    slice_end = min(deadline, time.monotonic() + WORD_SLICE_S)
                    monitor.wait_for(released | ended, slice_end, since=asked)

    def _kill_destination(self, target: Instance, started: float) -> None:
        """LM-05: the destination QEMU dies during stop-and-copy (the source paused before
        the switch-over, the guest stopped); the source is then let go on, and fails."""
        source = self.hv.guests.current(self.guest)
        paused = self.hv.monitor(source).wait_for(
            {"migration-pre-switchover", *_ENDED},
            time.monotonic() + self.limits.migration_timeout_s,
            since=started,
        )
        self.hv.lab.host(target.host).run(f"kill -KILL {target.pid}")
        self.hv.record(self.guest, target.host, "destination-failed", note="failure injected")
        if paused.name == "migration-pre-switchover":
            self.hv.qmp(source, "migrate-continue", state="pre-switchover")

    def _failure(self, source: Instance) -> str:
        try:
            info: dict[str, Any] = self.hv.qmp(source, "query-migrate")
        except LabError as err:
            return f"migration failed ({err})"
        said = info.get("error-desc", "no reason given")
        injected = " (failure injected at the destination)" if self.fail_at_destination else ""
        return f"migration failed: {said}{injected}"

    def _completed(self, source: Instance, target: Instance) -> Instance:
        hv = self.hv
        target_monitor = hv.monitor(target)
        resumed = target_monitor.wait_for({"resumed"}, time.monotonic() + 30.0)
        hv.guests.place(target, steering=hv.guests.steering(self.guest))
        # The primary first: once the guest holds it, what reaches the standby is dropped.
        if target.vm.has_primary:
            hv.primary_back(
                target,
                time.monotonic() + float(self.limits.passthrough_return_s),
                since=resumed.t,
            )
        else:
            hv.guests.steer(target, "standby")
        # QEMU announced the guest itself at the resume (RARP rounds); one more round on
        # the bench's word, logged, so the switch's learning is tied to an event
        hv.qmp(target, "announce-self", initial=50, max=550, rounds=1, step=100)
        hv.record(self.guest, target.host, "announce-sent")
        info = hv.qmp(source, "query-migrate")
        hv.record(
            self.guest,
            source.host,
            "qemu-downtime",
            downtime_ms=info.get("downtime"),
            total_ms=info.get("total-time"),
        )
        hv.drop_monitor(source)
        hv.guests.stop(source)
        return target

    def _rolled_back(
        self, source: Instance, target: Instance, had_primary: bool, started: float
    ) -> Instance:
        hv = self.hv
        # QEMU plugs a real VF back at once: the guest's VF driver must find its MAC
        # (the bench hears the failure about when QEMU acts; the guest's hot-plug takes
        # longer). A cancel by the bench set it before asking (``cancel_on``).
        hv.guests.prepare_vf(source)
        hv.drop_monitor(target)
        hv.guests.stop(target)
        events = hv.monitor(source).events
        stopped = next((e for e in events if e.name == "stop-and-copy-start"), None)
        if stopped is not None:  # QEMU let the guest run on where it was
            resumed = hv.monitor(source).wait_for({"resumed"}, time.monotonic() + 10.0, stopped.t)
            hv.record(self.guest, source.host, "guest-resumed-on-source", at=resumed.t)
        if had_primary and not hv.guests.primary_enslaved(source):
            hv.steered(source, "standby", None)  # ejected late (after a cancel): the standby
        if had_primary:  # QEMU plugs it back if the guest had ejected it
            hv.primary_back(
                source, time.monotonic() + float(self.limits.passthrough_return_s), since=started
            )
        return source
