"""A lab's QEMU guests at run time: boot an instance on a host, reach it, steer it, stop it.

A guest may have several QEMU instances over its life (each migration starts one on
the destination); ``LabState.placement[guest]`` says which one is the guest now:
``{"host", "instance", "pid", "nic", "steering"}``. Each instance keeps its files
in ``<state>/guests/<guest>/qemu-<n>/`` (sockets, console log, PID file), so a
teardown finds a QEMU by its command line even when the journal lost it.

Used by ``npabench up`` (boot every guest) and by the QEMU hypervisor (migration
destinations, revocation, steering). Everything on a host goes over SSH.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from bench.errors import LabError
from bench.hypervisor.placement import nic_at
from bench.lab.lab import Lab
from bench.lab.procfs import start_ticks
from bench.lab.state import Resource
from bench.qemu import host_net
from bench.qemu.accel import Accelerator, usable_accelerator
from bench.qemu.console import GuestConsole
from bench.qemu.failover_image import IMAGE_DIR_DEFAULT, READY_LINE
from bench.qemu.failover_vm import FailoverVm, VmFiles, qemu_arguments
from bench.qemu.guest_net import NETDEVS_COMMAND, GuestNet, parse_netdevs
from bench.qemu.remote import open_socket, start_qemu, stop_qemu
from bench.topology import Guest, Nic, Topology

#: The image every QEMU guest boots (``make qemu-failover-image`` builds it).
REPO = Path(__file__).resolve().parents[2]
IMAGE_DIR = REPO / IMAGE_DIR_DEFAULT
#: Each guest's failover master and standby netdevs, once seen (kept across migrations).
_PAIR: dict[tuple[str, str], tuple[str, str]] = {}
#: The consoles this process holds: (state dir, guest, instance) -> console, channel.
_CONSOLES: dict[tuple[str, str, int], tuple[GuestConsole, paramiko.Channel]] = {}
_CONSOLE_LOCK = threading.RLock()
#: First TCP port of migration streams (the instance number is added).
MIGRATION_PORT = 47000


@dataclass(frozen=True)
class Instance:
    """One QEMU instance of a guest on a host."""

    guest: str
    host: str
    number: int
    vm: FailoverVm
    files: VmFiles
    pid: int = 0

    @property
    def taps(self) -> tuple[str, str]:
        return self.vm.standby_tap, self.vm.primary_tap

    @property
    def journal_name(self) -> str:
        return f"qemu {self.guest}#{self.number}"


def primary_nic(topology: Topology, guest: str, host: str) -> Nic | None:
    """The NIC of ``host`` whose model QEMU plugs as ``guest``'s primary (the placement
    rule, ``nic_at``), if it gives any ("VFs")."""
    nic = nic_at(topology, guest, host)
    return nic if nic is not None and nic.vfs > 0 else None


def primary_model(topology: Topology, guest: Guest, host: str) -> str | None:
    """The primary QEMU plugs for ``guest`` on ``host``; None for a guest without the
    failover feature or a host without a primary to give."""
    if guest.nic_mode != "failover":
        return None
    nic = primary_nic(topology, guest.name, host)
    return nic.model if nic is not None else None


def mode_reason(instance: Instance, guest_says: str) -> str:
    """Why the guest is not in passthrough ('' if it is): no primary on its host, or what
    the guest itself shows."""
    if guest_says and instance.vm.failover and instance.vm.primary_model is None:
        return f"no VF on {instance.host} (no primary NIC to plug)"
    return guest_says


class QemuGuests:
    """The QEMU guests of one lab (one per controller process and lab)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.image_dir = IMAGE_DIR

    # -- where a guest is ------------------------------------------------------

    def placement(self, guest: str) -> dict[str, Any]:
        placed = self.lab.state.placement.get(guest)
        if not placed:
            raise LabError(f"guest {guest} has no running QEMU instance in lab {self.lab.name}")
        return placed

    def current(self, guest: str) -> Instance:
        placed = self.placement(guest)
        return self.instance(guest, str(placed["host"]), int(placed["instance"]), placed["pid"])

    def next_instance(self, guest: str, host: str) -> Instance:
        """A new instance of ``guest`` on ``host``, numbered after every one of the lab's
        (its files, TAPs and migration port are its own)."""
        self.lab.state.migrations += 1
        return self.instance(guest, host, self.lab.state.migrations)

    def instance(self, guest: str, host: str, number: int, pid: int = 0) -> Instance:
        topology = self.lab.topology
        spec = topology.guest(guest)
        index = [g.name for g in topology.guests].index(guest)
        standby, primary = host_net.tap_names(index, number)
        vm = FailoverVm(
            guest=guest,
            mac=spec.mac,
            address=str(spec.address),
            standby_tap=standby,
            primary_tap=primary,
            primary_model=primary_model(topology, spec, host),
            failover=spec.nic_mode == "failover",
            mtu=spec.mtu,
        )
        files = VmFiles(self.lab.state.directory / "guests" / guest / f"qemu-{number}", guest)
        return Instance(guest, host, number, vm, files, int(pid))

    # -- boot and stop ----------------------------------------------------------

    def accelerator(self) -> Accelerator:
        """KVM if it really runs a guest here, else TCG: probed once per lab (the probe
        of a hanging KVM costs its whole timeout), kept in the lab's state directory."""
        kept = self.lab.state.directory / "qemu-accel"
        with contextlib.suppress(OSError):
            known = kept.read_text().strip()
            if known in ("kvm", "tcg"):
                return known  # type: ignore[return-value]
        accel = usable_accelerator(self.image_dir / "vmlinuz")
        kept.write_text(accel + "\n")
        return accel

    def boot(self, instance: Instance, incoming: str | None = None) -> Instance:
        """Make the instance's TAPs, start its QEMU (journalled at once); steered to the
        standby until the guest has a primary (with the guest's steering on). Returns the
        instance with its PID."""
        if not (self.image_dir / "initrd.img").is_file():
            raise LabError(
                f"no QEMU failover guest image in {self.image_dir}: run `make qemu-failover-image`"
            )
        host = self.lab.host(instance.host)
        vm = instance.vm
        host_net.make_taps(host, instance.taps, vm.mtu)
        if self.steering(instance.guest):
            host_net.steer(host, vm.mac, vm.standby_tap, instance.taps)
        accel = self.accelerator()
        argv = qemu_arguments(vm, self.image_dir, instance.files, accel, incoming)
        try:
            pid = start_qemu(host, argv, instance.files)
        except BaseException:
            host_net.remove_taps(host, instance.taps)
            raise
        started = Instance(instance.guest, instance.host, instance.number, vm, instance.files, pid)
        self.lab.state.record(Resource("process", started.journal_name, pid, start_ticks(pid)))
        return started

    def place(self, instance: Instance, steering: bool | None = None) -> None:
        """Make ``instance`` the guest's current one (journalled); ``steering``: on or off
        (None: as the guest had it, on at first)."""
        if steering is None:
            steering = self.steering(instance.guest)
        nic = primary_nic(self.lab.topology, instance.guest, instance.host)
        self.lab.state.placement[instance.guest] = {
            "host": instance.host,
            "instance": instance.number,
            "pid": instance.pid,
            "nic": nic.name if nic is not None else None,
            "steering": steering,
        }
        self.lab.state.save()

    def stop(self, instance: Instance) -> None:
        """Stop the instance's QEMU and remove its TAPs."""
        self._drop_console(instance)
        host = self.lab.host(instance.host)
        if instance.pid:
            stop_qemu(host, instance.pid, instance.files)
        host_net.remove_taps(host, instance.taps)
        for resource in list(self.lab.state.resources):
            if resource.kind == "process" and resource.name == instance.journal_name:
                self.lab.state.forget(resource)

    def wait_booted(self, instance: Instance, deadline: float) -> None:
        """Wait until the guest printed its ready line on the console (network configured)."""
        host = self.lab.host(instance.host)
        log = str(instance.files.console_log)
        while True:
            found = host.run(f"grep -qF {READY_LINE!r} {log}")
            if found.exit_status == 0:
                return
            alive = host.run(f"kill -0 {instance.pid}")
            if alive.exit_status != 0:
                tail = host.run(f"tail -n 5 {instance.files.log} {log} 2>/dev/null").stdout
                raise LabError(f"{instance.host}: QEMU of {instance.guest} exited: {tail}")
            if time.monotonic() > deadline:
                raise LabError(
                    f"{instance.host}: guest {instance.guest} did not boot in time; "
                    f"see its console log {log}"
                )
            time.sleep(0.2)

    # -- the guest's console -----------------------------------------------------

    def _console(self, instance: Instance) -> GuestConsole:
        """The instance's serial console. QEMU serves one client at a time, so a process
        keeps one connection per instance, shared by every ``QemuGuests`` of the lab (the
        hypervisor's, a test's), and opens it again when its SSH connection went away."""
        key = (str(self.lab.state.directory), instance.guest, instance.number)
        entry = _CONSOLES.get(key)
        if entry is None or entry[1].closed or not entry[1].get_transport().is_active():
            channel = open_socket(self.lab.host(instance.host), str(instance.files.console_socket))
            entry = (GuestConsole(channel, instance.guest), channel)
            _CONSOLES[key] = entry
        return entry[0]

    def _drop_console(self, instance: Instance) -> None:
        with _CONSOLE_LOCK:
            entry = _CONSOLES.pop(
                (str(self.lab.state.directory), instance.guest, instance.number), None
            )
        if entry is not None:
            with contextlib.suppress(OSError):
                entry[1].close()

    def run(self, instance: Instance, command: str, timeout: float = 10.0) -> str:
        """Run ``command`` in the guest; its output (LabError on a non-zero exit)."""
        with _CONSOLE_LOCK:
            result = self._console(instance).run(command, timeout=timeout)
        if result.exit_status != 0:
            raise LabError(
                f"guest {instance.guest} on {instance.host}: `{command}` exited "
                f"{result.exit_status}: {result.output.strip()[-300:]}"
            )
        return result.output

    def net(self, instance: Instance) -> GuestNet:
        """The guest's netdevs as it sees them now."""
        return parse_netdevs(self.run(instance, NETDEVS_COMMAND))

    def primary_enslaved(self, instance: Instance) -> bool:
        """Whether net_failover holds a primary now (from then on it drops what arrives on
        the standby): a slave of the master other than the standby. One glob in the
        guest's shell, no process started: quick enough to poll while the guest is busy
        probing a device."""
        key = (str(self.lab.state.directory), instance.guest)
        if key not in _PAIR:
            net = self.net(instance)
            if net.master is None or net.standby is None:
                return False  # no failover pair: never a primary
            _PAIR[key] = (net.master.name, net.standby.name)
        master, standby = _PAIR[key]
        lowers = self.run(instance, f"echo /sys/class/net/{master}/lower_*").split()
        return any("*" not in p and not p.endswith(f"/lower_{standby}") for p in lowers)

    def wait_primary(self, instance: Instance, present: bool, deadline: float) -> None:
        """Poll the guest until its primary is enslaved (``present``) or gone."""
        while self.primary_enslaved(instance) != present:
            if time.monotonic() > deadline:
                state = "take" if present else "let go of"
                raise TimeoutError(
                    f"guest {instance.guest} on {instance.host} did not {state} its primary in time"
                )
            time.sleep(0.005)

    def wait_mode(self, instance: Instance, mode: str, deadline: float) -> GuestNet:
        """Poll the guest until it is in ``mode`` (passthrough: primary enslaved and up)."""
        while True:
            net = self.net(instance)
            if net.mode == mode:
                return net
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"guest {instance.guest} on {instance.host} not in {mode} in time "
                    f"({net.reason() or net.mode})"
                )
            time.sleep(0.02)

    # -- steering ------------------------------------------------------------------

    def steering(self, guest: str) -> bool:
        return bool(self.lab.state.placement.get(guest, {}).get("steering", True))

    def steer(self, instance: Instance, to: str) -> None:
        """Steer the guest's inbound frames to its ``primary`` or ``standby`` TAP (a no-op
        with steering off: the bridge learns)."""
        if not self.steering(instance.guest):
            return
        host = self.lab.host(instance.host)
        tap = instance.vm.primary_tap if to == "primary" else instance.vm.standby_tap
        host_net.steer(host, instance.vm.mac, tap, instance.taps)

    def set_steering(self, guest: str, on: bool) -> None:
        """Turn steering on (static entry where the guest's traffic belongs) or off."""
        instance = self.current(guest)
        self.lab.state.placement[guest]["steering"] = on
        self.lab.state.save()
        host = self.lab.host(instance.host)
        if on:
            self.steer(
                instance, "primary" if self.net(instance).mode == "passthrough" else "standby"
            )
        else:
            host_net.unsteer(host, instance.vm.mac, instance.taps)

    def close(self) -> None:
        """Nothing of its own to let go of: the consoles are the process's, shared, and end
        with the SSH connection they run over (``Lab.close``)."""
