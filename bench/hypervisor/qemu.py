"""The QEMU hypervisor: failover guests (net_failover) under real QEMU, driven over QMP.

A guest is a QEMU instance on its host (``bench.qemu.guests``); the bench listens to
each instance's QMP events and to its guest kernel's word on the primary
(``bench.qemu.monitor``: ``primary-registered``, ``primary-unregistered``) and adds its
own steps to the same log: ``emulation-active`` when the guest has let go of its
primary and inbound frames are steered to the standby, ``primary-steered`` when
net_failover holds a primary again and frames are steered to it, and
``passthrough-active`` once that primary is up (read on the guest's console).

Revocation is QEMU's own: ``device_del`` of the primary (the guest ejects it) and
``device_add`` to give it back. A live migration is in ``qemu_migration.py``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

from bench.errors import LabError, UsageError
from bench.hypervisor.interface import HypervisorEvent, MigrationResult
from bench.hypervisor.registry import register
from bench.lab.lab import Lab
from bench.qemu.failover_image import tcp_echo_command
from bench.qemu.failover_vm import PRIMARY_ID, primary_device
from bench.qemu.guest_net import guest_netdev
from bench.qemu.guests import Instance, QemuGuests, mode_reason
from bench.qemu.kernel_log import PRIMARY_EVENTS, STAMP_STEP_S
from bench.qemu.monitor import QemuMonitor, Steering
from bench.qemu.primary_asker import ASK_GUEST_S, WORD_SLICE_S, PrimaryAsker
from bench.qemu.qmp import QmpClient, QmpError
from bench.qemu.remote import open_socket

#: Echo requests per second a TCG guest answers exactly (measured: 500 exact, 2000 not).
TCG_PROBE_PPS = 500
#: How long the guest may take to take a primary that was plugged (hot-add, probe,
#: net_failover enslaving it, link up): TCG guests are slow.
PRIMARY_UP_S = 30.0


#: Shared by every QemuHypervisor of a lab in this process (keyed by the lab's state
#: directory): one event monitor per QEMU instance, one event log per guest.
_MONITORS: dict[tuple[str, str, int], QemuMonitor] = {}
_EVENTS: dict[tuple[str, str], list[HypervisorEvent]] = {}
_SHARED = threading.RLock()


@register("qemu")
class QemuHypervisor:
    """The hypervisor of a lab's QEMU hosts (one per ``Lab``; close it when done)."""

    #: A migration's usual length here, to size the traffic around it: under TCG, QEMU
    #: takes ~1 s and the guest ~1.5 s more to take the destination's primary.
    expected_migration_s = 3.5
    #: Besides the downtime, the guest's path is down while it ejects its primary: from
    #: QEMU's unplug request until the guest let go of it (the driver closes the primary
    #: before net_failover unregisters it, and until then drops what the standby gets).
    #: And while it takes a primary again: from the moment its net_failover holds it (its
    #: kernel says so on its own serial port) until the host has steered to it, the time
    #: of one ``bridge fdb`` run by the host's watcher (``bench.qemu.steering_watch``).
    #: (Flooding both TAPs meanwhile was tried: net_failover then delivers both copies
    #: while it opens the primary.)
    #: A cancelled migration whose guest ejects late has both, between the cancel and
    #: the primary back on the source.
    #: A migration that fails after the guest stopped holds it paused until QEMU resumes it
    #: on the source; what reaches it meanwhile beyond QEMU's queues is lost.
    outage_windows = (
        ("stop-and-copy-start", "resumed"),
        ("unplug-primary", "emulation-active"),
        ("primary-registered", "primary-steered"),
        ("cancel-requested", "primary-steered"),
    )
    #: QEMU waits up to 30 s for a guest to finish an unplug it was asked for before it
    #: gives up a cancelled migration: what a cancel may take beyond the bench's bound.
    cancel_grace_s = 35.0

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.limits = lab.topology.limits
        self.guests = QemuGuests(lab)
        self._lab = str(lab.state.directory)
        self._migrating: dict[str, Instance] = {}

    @property
    def probe_pps_limit(self) -> int | None:
        """The rate of echo requests a guest answers exactly: a TCG guest's emulated CPU
        falls behind well below what the generator sends (2000 pps lose frames)."""
        accels = {self.guests.accelerator(g.host) for g in self.lab.topology.guests}
        return TCG_PROBE_PPS if "tcg" in accels else None

    # -- events -------------------------------------------------------------------

    def record(
        self, guest: str, host: str, name: str, stamp: float | None = None, **details: Any
    ) -> HypervisorEvent:
        """Add a step of the bench's own to ``guest``'s log (at ``stamp``, else now)."""
        event = HypervisorEvent(time.time() if stamp is None else stamp, host, name, details)
        self._seen(guest, event)
        return event

    def monitor(self, instance: Instance) -> QemuMonitor:
        """The event monitor of ``instance`` (connected on first use, kept, and shared by
        every hypervisor object of the lab in this process: QEMU serves one client)."""
        key = (self._lab, instance.guest, instance.number)
        with _SHARED:
            monitor = _MONITORS.get(key)
            if monitor is not None and monitor.listening:
                return monitor
            stale = _MONITORS.pop(key, None)
        if stale is not None:
            stale.close()  # its connections hold QEMU's one client place on each socket
        # connected outside the lock (seconds at worst): other guests' events go on
        vm = instance.vm
        fresh = QemuMonitor(
            self.lab.host(instance.host),
            instance.host,
            instance.files,
            on_event=functools.partial(self._seen, instance.guest),
            steering=Steering(
                vm.mac,
                vm.standby_tap,
                vm.primary_port,
                self.guests.steering(instance.guest),
                (vm.primary_vf.pf_netdev, vm.primary_vf.vf) if vm.primary_vf else None,
            )
            if vm.has_primary
            else None,
            clock_offset=self.guests.clock_offset(instance.host),
        )
        with _SHARED:
            monitor = _MONITORS.setdefault(key, fresh)
        if monitor is not fresh:
            fresh.close()  # another thread connected first
        return monitor

    def _seen(self, guest: str, event: HypervisorEvent) -> None:
        with _SHARED:
            _EVENTS.setdefault((self._lab, guest), []).append(event)

    def events(self, guest: str) -> list[HypervisorEvent]:
        """What QEMU and the bench did to ``guest`` while this process listened."""
        with _SHARED:
            return sorted(_EVENTS.get((self._lab, guest), []), key=lambda e: e.t)

    def drop_monitor(self, instance: Instance) -> None:
        with _SHARED:
            monitor = _MONITORS.pop((self._lab, instance.guest, instance.number), None)
        if monitor is not None:
            monitor.close()

    def qmp(self, instance: Instance, command: str, **arguments: Any) -> Any:
        """Run one QMP command on ``instance``'s command monitor."""
        channel = open_socket(self.lab.host(instance.host), str(instance.files.qmp_commands))
        try:
            client = QmpClient(instance.files.qmp_commands, timeout=10.0, stream=channel)
        except QmpError:
            channel.close()
            raise
        try:
            return client.execute(command, **arguments)
        finally:
            client.close()

    # -- looking --------------------------------------------------------------------

    def host_of(self, guest: str) -> str:
        return self.lab.guest_host(guest)

    def status(self, guest: str) -> dict[str, Any]:
        """The guest's mode as the guest sees it (console), with where it runs."""
        instance = self.guests.current(guest)
        net = self.guests.net(instance)
        primary = net.primary
        netdev = guest_netdev(net)
        return {
            "host": instance.host,
            "instance": instance.number,
            "mode": net.mode,
            "reason": mode_reason(instance, net.reason()),
            "vf": primary.name if primary else None,
            "plugin": primary.driver if primary else None,
            "netdev": net.master.name if net.master else None,
            "steering": self.guests.steering(guest),
            "counters": netdev.counters if netdev is not None else {},
        }

    # -- guests and primaries ----------------------------------------------------------

    def start_guest(self, guest: str) -> None:
        """Boot ``guest`` again on the host it is placed on (after ``stop_guest``)."""
        placed = self.lab.state.placement.get(guest)
        if placed and placed.get("pid"):
            raise UsageError(f"guest {guest} is running; stop it first")
        host = placed["host"] if placed else self.lab.topology.guest(guest).host
        instance = self.guests.boot(self.guests.next_instance(guest, host))
        self.guests.place(instance)
        deadline = time.monotonic() + self.limits.lab_up_timeout_s
        self.guests.wait_booted(instance, deadline)
        if instance.vm.has_primary:
            self.primary_back(instance, deadline)

    def stop_guest(self, guest: str) -> None:
        instance = self.guests.current(guest)
        self.drop_monitor(instance)
        self.guests.stop(instance)
        self.lab.state.placement[guest] = {**self.lab.state.placement[guest], "pid": 0}
        self.lab.state.save()

    def suspend(self, guest: str) -> None:
        self.qmp(self.guests.current(guest), "stop")

    def resume(self, guest: str) -> None:
        self.qmp(self.guests.current(guest), "cont")

    def revoke_vf(self, guest: str, *, surprise: bool = False) -> None:
        """Unplug the guest's primary (``device_del``: the guest ejects it); inbound frames
        go to the standby once it is gone. QEMU has no surprise removal of a PCIe device:
        ``surprise`` is refused."""
        if surprise:
            raise UsageError(
                "QEMU cannot remove a PCIe device without the guest's eject "
                "(device_del always asks the guest): no surprise removal on this backend"
            )
        instance = self.guests.current(guest)
        monitor = self.monitor(instance)
        asked = self.record(guest, instance.host, "vf-revoke")
        self.qmp(instance, "device_del", id=PRIMARY_ID)
        deadline = time.monotonic() + self.limits.vf_release_timeout_s
        # the kernel's "unregistered" (net_failover lets go) comes before QEMU's DEVICE_DELETED
        word = monitor.wait_for({"primary-unregistered", "primary-ejected"}, deadline, asked.t)
        at = self.steered(instance, "standby", word)
        self.record(guest, instance.host, "emulation-active", stamp=at, reason="VF revoked")
        if instance.vm.primary_vf is not None:  # its MAC goes once QEMU deleted the device
            monitor.wait_for({"primary-ejected"}, deadline, asked.t)
            self.guests.vf_left(instance)

    def offer_vf(self, guest: str) -> None:
        """Plug the primary again (``device_add``); steered to it once the guest has it."""
        instance = self.guests.current(guest)
        if not instance.vm.has_primary:
            raise UsageError(f"host {instance.host} has no primary to give {guest}")
        if self.guests.net(instance).primary is not None:
            return
        self.monitor(instance)  # listening before the guest can take it
        offered = self.record(guest, instance.host, "vf-offer")
        self.guests.prepare_vf(instance)  # a real VF's driver reads its MAC when it probes
        with contextlib.suppress(QmpError):  # already plugged, not yet taken: wait for it
            self.qmp(instance, "device_add", **primary_device(instance.vm))
        self.primary_back(instance, time.monotonic() + PRIMARY_UP_S, since=offered.t)

    def primary_back(self, instance: Instance, deadline: float, since: float = 0.0) -> None:
        """Steer to the primary as soon as the guest holds it (net_failover drops what the
        standby receives from then on), then wait for the primary's link. ``since``: when
        the primary was given (epoch seconds); an earlier registration does not count."""
        word = self.await_primary(instance, since, deadline)
        at = self.steered(instance, "primary", word)
        self.record(instance.guest, instance.host, "primary-steered", stamp=at)
        net = self.guests.wait_mode(instance, "passthrough", deadline)
        self.record(
            instance.guest,
            instance.host,
            "passthrough-active",
            plugin=net.primary.driver if net.primary else None,
        )

    def steered(self, instance: Instance, to: str, word: HypervisorEvent | None) -> float:
        """Inbound frames go to the guest's ``to`` TAP (``primary`` or ``standby``) after
        the guest changed: the host's watcher moved them the moment it read the kernel's
        ``word`` (then its details say so); else the watcher is asked to (the one writer
        while it runs: a kernel's word it heard meanwhile wins over the bench's look);
        without one the bench moves them itself. When that was (epoch seconds); LabError
        if it could not be done."""
        if word is not None and word.details.get("steered") == to:
            error = word.details.get("steer_error")
            if error:
                raise LabError(f"{instance.host}: steering {instance.guest} to its {to}: {error}")
            return word.t + float(word.details.get("steer_ms", 0.0)) / 1000
        if self.guests.steering(instance.guest):
            at = self.monitor(instance).steer(to)
            if at is not None:
                return at
        self.guests.steer(instance, to)
        return time.time()

    def await_primary(
        self, instance: Instance, since: float, deadline: float
    ) -> HypervisorEvent | None:
        """Return the moment the guest's net_failover takes a primary: its kernel says so on
        its own serial port (``primary-registered``, at or after ``since``), or, should
        that word not be heard (it came before the bench listened), asking the guest finds
        it so (logged then as ``primary-registered`` at the last time it did not). The
        guest is asked in the background: a slow answer never holds back the word.
        The kernel's word, if that is how it was known."""
        monitor = self.monitor(instance)
        holds = functools.partial(self.guests.primary_enslaved, instance)
        with PrimaryAsker(holds, since or time.time(), lambda: monitor.hears_kernel) as asker:
            while True:
                with contextlib.suppress(TimeoutError):
                    slice_end = min(deadline, time.monotonic() + WORD_SLICE_S)
                    return monitor.wait_for({"primary-registered"}, slice_end, since=since)
                if asker.error is not None:
                    raise asker.error
                if asker.found is not None:
                    # not heard from the kernel: the earliest it can have happened (the
                    # last time it did not hold it), for the log and the declared window
                    self.record(
                        instance.guest,
                        instance.host,
                        "primary-registered",
                        stamp=asker.found,
                        heard="asking the guest",
                    )
                    return None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"guest {instance.guest} on {instance.host} did not take its primary "
                        "in time"
                    )

    @contextlib.contextmanager
    def following(self, guest: str, period_s: float = 0.02) -> Iterator[None]:
        """While inside, follow the guest's own changes: a thread watches whether the guest
        holds its primary (a driver unloaded or loaded in the guest, FB-05) and logs each
        change with when inbound frames were steered to the standby or the primary. A
        NIC's PF hears of a VF driver's reset over its mailbox; QEMU says nothing, so the
        host's watcher steers on the guest kernel's word (and the bench asks the guest
        every ``period_s``, and steers itself, when that word is not heard)."""
        instance = self.guests.current(guest)
        monitor = self.monitor(instance)
        stop = threading.Event()
        failures: list[BaseException] = []

        def holds(since: float) -> tuple[bool | None, float, HypervisorEvent | None]:
            """The guest kernel's next word on its primary after ``since`` (None: none came
            for a while, or none is heard: ask the guest), and that word."""
            if not monitor.hears_kernel:
                stop.wait(period_s)
                return None, since, None
            try:
                said = monitor.wait_for(PRIMARY_EVENTS, time.monotonic() + ASK_GUEST_S, since=since)
            except TimeoutError:
                return None, since, None
            return said.name == "primary-registered", said.t + STAMP_STEP_S / 2, said

        def watch(held: bool, since: float) -> None:
            while not stop.is_set():
                try:
                    now, since, word = holds(since)
                    if now is None:
                        now = self.guests.primary_enslaved(instance)
                    if now != held:
                        at = self.steered(instance, "primary" if now else "standby", word)
                        self.record(
                            guest,
                            instance.host,
                            "primary-steered" if now else "emulation-active",
                            stamp=at,
                            reason="the guest's own change",
                        )
                        held = now
                except BaseException as err:  # raised again when the block ends
                    failures.append(err)
                    return

        # where the guest is now, before the caller changes anything
        since = time.time()
        held = self.guests.primary_enslaved(instance)
        thread = threading.Thread(
            target=watch, args=(held, since), name=f"follow-{guest}", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
        if failures:
            raise failures[0]

    def start_tcp_echo(self, guest: str, port: int) -> None:
        """A TCP echo server in the guest on ``port`` (kept; started once)."""
        # busybox nc listens on an IPv6 socket (v4-mapped) where the kernel has IPv6
        listening = f"grep -qi ':{port:04X} 0*:0000 0A' /proc/net/tcp /proc/net/tcp6"
        command = f"{listening} || {{ {tcp_echo_command(port)} }}"
        instance = self.guests.current(guest)
        self.guests.run(instance, command)
        deadline = time.monotonic() + 5.0
        while "yes" not in self.guests.run(instance, f"{listening} && echo yes || true"):
            if time.monotonic() > deadline:
                raise LabError(f"guest {guest}: the TCP echo server on port {port} did not listen")
            time.sleep(0.05)

    def set_steering(self, guest: str, on: bool) -> None:
        """Steer the guest's inbound frames to the TAP that carries them (on), or let the
        host bridge learn (off: the blackout net_failover then shows); the host's watcher
        steers on the guest kernel's word only while it is on."""
        instance = self.guests.current(guest)
        monitor = self.monitor(instance) if instance.vm.has_primary else None
        if monitor is not None and not on:
            monitor.set_steering(False)  # before the entry goes: nothing steers after it
        self.guests.set_steering(guest, on)
        if monitor is not None and on:
            monitor.set_steering(True)  # last: the kernel's last word corrects a stale look

    # -- live migration -----------------------------------------------------------------

    def migrate(
        self, guest: str, destination: str, *, fail_at_destination: bool = False
    ) -> MigrationResult:
        from bench.hypervisor.qemu_migration import QemuMigration

        return QemuMigration(self, guest, destination, fail_at_destination).run()

    def migrating(self, guest: str, source: Instance | None) -> None:
        """Note (``source``) or forget (None) that ``guest`` migrates, for a cancel."""
        with _SHARED:
            if source is None:
                self._migrating.pop(guest, None)
            else:
                self._migrating[guest] = source

    def cancel_migration(self, guest: str) -> None:
        """``migrate_cancel`` on the source: QEMU plugs the primary back there."""
        with _SHARED:
            source = self._migrating.get(guest)
        if source is None:
            raise UsageError(f"guest {guest} is not migrating")
        self.record(guest, source.host, "cancel-requested")
        self.cancel_on(source)

    def cancel_on(self, source: Instance) -> None:
        """``migrate_cancel`` on ``source``; a real VF gets the guest's MAC back first, as
        QEMU plugs it again at once and the guest's VF driver reads its MAC when it probes."""
        self.guests.prepare_vf(source)
        self.qmp(source, "migrate_cancel")

    def close(self) -> None:
        """Nothing of its own: monitors and consoles are shared in the process and end with
        the SSH connections they run over (``Lab.close``) or with their QEMU."""
        self.guests.close()
