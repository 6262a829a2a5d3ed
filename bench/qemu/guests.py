"""A lab's QEMU guests at run time: boot an instance on a host, reach it, steer it, stop it.

A guest may have several QEMU instances over its life (each migration starts one on
the destination); ``LabState.placement[guest]`` says which one is the guest now:
``{"host", "instance", "pid", "nic", "steering"}``. Each instance keeps its files
in ``<state>/guests/<guest>/qemu-<n>/`` (sockets, console log, PID file), so a
teardown finds a QEMU by its command line even when the journal lost it.

Used by ``npabench up`` (boot every guest) and by the QEMU hypervisor (migration
destinations, revocation, steering). Everything on a host goes over SSH.

On a lab host (a real server, ``backend: lab``) the instance's files live under the
lab's directory on that server (``remote_guests.remote_root``), the guest image is
copied there first, the accelerator is probed there, and a NIC with a real PF gives
the guest one of its VFs as the primary, through vfio-pci. What the bench changes on
the server is journalled first (``bench.lab.remote_guests``), so a teardown undoes it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paramiko

from bench.errors import LabError
from bench.hypervisor.placement import nic_at
from bench.lab import remote_guests
from bench.lab.lab import Lab
from bench.lab.procfs import start_ticks
from bench.lab.state import Resource
from bench.qemu import host_net
from bench.qemu.accel import Accelerator, remote_accelerator, usable_accelerator
from bench.qemu.console import GuestConsole
from bench.qemu.failover_image import IMAGE_DIR_DEFAULT, READY_LINE
from bench.qemu.failover_vm import FailoverVm, PrimaryVf, VmFiles, qemu_arguments
from bench.qemu.guest_net import NETDEVS_COMMAND, GuestNet, parse_netdevs
from bench.qemu.remote import host_clock_offset, open_socket, start_qemu, stop_qemu
from bench.ssh import SshHost
from bench.topology import Guest, Nic, Topology
from drivers.linux_pf import LinuxPf
from drivers.linux_pf_vfio import VFIO_DRIVER, bind_vfio
from drivers.pf_control import PfControlError

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
    def taps(self) -> tuple[str, ...]:
        return self.vm.taps

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
    if guest_says and instance.vm.failover and not instance.vm.has_primary:
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
            primary_vf=self._primary_vf(spec, host, number),
        )
        base = (
            Path(remote_guests.remote_root(self.lab.name))
            if self.on_lab_host(host)
            else self.lab.state.directory
        )
        files = VmFiles(base / "guests" / guest / f"qemu-{number}", guest)
        return Instance(guest, host, number, vm, files, int(pid))

    def _real_pf(self, guest: str, host: str, failover: bool) -> Nic | None:
        """The real PF (``pci:``) whose VFs a failover guest gets as its primary on
        ``host``; None for an emulated primary, no primary, or a guest without failover."""
        nic = primary_nic(self.lab.topology, guest, host)
        return nic if failover and nic is not None and nic.pci is not None else None

    def on_lab_host(self, host: str) -> bool:
        """Whether ``host`` is a real server (its files are its own, not this machine's)."""
        return self.lab.topology.host(host).backend == "lab"

    def clock_offset(self, host: str) -> float:
        """``host``'s clock minus this machine's: 0 for an emulated host (this machine),
        measured for a lab host (each monitor asks as it connects: QMP and the kernel
        watcher stamp with the host's clock, which may drift)."""
        if not self.on_lab_host(host):
            return 0.0
        return host_clock_offset(self.lab.host(host))

    def _primary_vf(self, guest: Guest, host: str, number: int) -> PrimaryVf | None:
        """The real VF instance ``number`` of ``guest`` gets on ``host`` as its primary: the
        one it has (journalled in its placement), else the lowest VF of the host's PF that
        no other guest there holds; None without a real PF or a free VF."""
        nic = self._real_pf(guest.name, host, guest.nic_mode == "failover")
        if nic is None or nic.pci is None:
            return None
        placed = self.lab.state.placement.get(guest.name, {})
        if "vf" in placed and placed.get("host") == host and placed.get("instance") == number:
            return PrimaryVf(**placed["vf"]) if placed["vf"] else None  # None: none was free
        taken = {
            int(p["vf"]["vf"])
            for g, p in self.lab.state.placement.items()
            if g != guest.name and p.get("host") == host and p.get("vf")
            if p["vf"]["pf_pci"] == nic.pci
        }
        free = [n for n in range(nic.vfs) if n not in taken]
        if not free:
            return None
        pf = LinuxPf(self.lab.host(host), nic.pci)
        return PrimaryVf(nic.pci, pf.netdev(), free[0], pf.vf_device(free[0]).pci)

    # -- boot and stop ----------------------------------------------------------

    def accelerator(self, host: str | None = None) -> Accelerator:
        """KVM if it really runs a guest on ``host``, else TCG: probed once per lab and
        host kind (the probe of a hanging KVM costs its whole timeout), kept in the lab's
        state directory. Emulated hosts (and None) are this machine; a lab host is probed
        there, with the image :meth:`_image_on` copied."""
        remote = host is not None and self.on_lab_host(host)
        kept = self.lab.state.directory / (f"qemu-accel-{host}" if remote else "qemu-accel")
        with contextlib.suppress(OSError):
            known = kept.read_text().strip()
            if known in ("kvm", "tcg"):
                return known  # type: ignore[return-value]
        if host is not None and remote:
            kernel = Path(remote_guests.remote_root(self.lab.name)) / "image" / "vmlinuz"
            accel = remote_accelerator(self.lab.host(host), str(kernel))
        else:
            accel = usable_accelerator(self.image_dir / "vmlinuz")
        kept.write_text(accel + "\n")
        return accel

    def _image_on(self, host: SshHost) -> Path:
        """The guest image on a lab host: copied into the lab's directory there (again
        only when a file's size differs)."""
        remote = Path(remote_guests.remote_root(self.lab.name)) / "image"
        host.run(f"mkdir -p {remote}", check=True)
        for name in ("vmlinuz", "initrd.img"):
            local = self.image_dir / name
            there = host.run(f"stat -c %s {remote / name} 2>/dev/null").stdout.strip()
            if there != str(local.stat().st_size):
                host.put(local, str(remote / name))
        return remote

    def _take_vf(self, host: SshHost, vf: PrimaryVf, mac: str) -> None:
        """Give the VF to vfio-pci (if it is not already) with the guest's MAC: the
        guest's VF driver takes its MAC from the PF when it probes, and net_failover
        pairs the primary with the standby by that MAC."""
        pf = LinuxPf(host, vf.pf_pci)
        try:
            if pf.vf_device(vf.vf).driver == VFIO_DRIVER:  # another VM's, or another lab's
                raise LabError(
                    f"{host.name}: VF {vf.vf} ({vf.pci}) of PF {vf.pf_pci} is already bound to "
                    f"{VFIO_DRIVER}, so something else may be using it; the bench takes only "
                    "VFs their own driver holds"
                )
            bind_vfio(pf, vf.vf)
        except PfControlError as err:
            raise LabError(f"{host.name}: VF {vf.vf} of {vf.pf_pci} for the guest: {err}") from err
        host_net.set_vf_mac(host, vf, mac)

    def vf_left(self, instance: Instance) -> None:
        """A real VF has left the guest (QEMU deleted the device): its MAC off it, so the
        NIC hands the guest's frames to the PF (and the bridge, and the standby)."""
        if instance.vm.primary_vf is not None:
            host = self.lab.host(instance.host)
            host_net.set_vf_mac(host, instance.vm.primary_vf, host_net.NO_MAC)

    def prepare_vf(self, instance: Instance) -> None:
        """Before a real VF is plugged again: give it the guest's MAC (cleared while the
        guest was on its standby)."""
        vf = instance.vm.primary_vf
        if vf is not None:
            host_net.set_vf_mac(self.lab.host(instance.host), vf, instance.vm.mac)

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
        remote = self.on_lab_host(instance.host)
        image_dir = self._image_on(host) if remote else self.image_dir
        if remote:  # journalled before anything is changed on the server
            remote_guests.check_free(host, vm.taps, instance.files.pidfile)
            remote_guests.record_instance(
                self.lab.state,
                instance.host,
                directory=str(instance.files.directory),
                name=instance.files.name,
                taps=vm.taps,
                vf=asdict(vm.primary_vf) if vm.primary_vf is not None else None,
                mac=vm.mac,
            )
        host_net.make_taps(host, vm.taps, vm.mtu)
        if self.steering(instance.guest):  # the standby's until the guest has its primary
            host_net.steer(host, vm.mac, vm.standby_tap, vm.taps)
        accel = self.accelerator(instance.host)
        argv = qemu_arguments(vm, image_dir, instance.files, accel, incoming)
        try:
            if vm.primary_vf is not None:
                self._take_vf(host, vm.primary_vf, vm.mac)
            pid = start_qemu(host, argv, instance.files)
        except BaseException:
            self._undo(host, instance)
            raise
        started = Instance(instance.guest, instance.host, instance.number, vm, instance.files, pid)
        if not remote:  # a lab host's QEMU is the server's process, journalled above
            self.lab.state.record(Resource("process", started.journal_name, pid, start_ticks(pid)))
        return started

    def _undo(self, host: SshHost, instance: Instance) -> None:
        """Remove the instance's TAPs and give its VF back (QEMU stopped already: on a lab
        host it is stopped here if it runs after all, by its PID file)."""
        if self.on_lab_host(instance.host):
            files = instance.files
            stopped = host.run(remote_guests.stop_command(str(files.directory), files.name))
            if stopped.exit_status != 0:
                raise LabError(f"{host.name}: QEMU of {files.directory} did not stop")
        host_net.remove_taps(host, instance.taps)
        vf = instance.vm.primary_vf
        if vf is not None:
            remote_guests.give_back_vf(host, asdict(vf), instance.vm.mac)
        if self.on_lab_host(instance.host):
            remote_guests.forget_instance(
                self.lab.state, instance.host, str(instance.files.directory), instance.files.name
            )

    def place(self, instance: Instance, steering: bool | None = None) -> None:
        """Make ``instance`` the guest's current one (journalled); ``steering``: on or off
        (None: as the guest had it, on at first)."""
        if steering is None:
            steering = self.steering(instance.guest)
        nic = primary_nic(self.lab.topology, instance.guest, instance.host)
        vf = instance.vm.primary_vf
        self.lab.state.placement[instance.guest] = {
            "host": instance.host,
            "instance": instance.number,
            "pid": instance.pid,
            "nic": nic.name if nic is not None else None,
            "steering": steering,
            **(
                {"vf": asdict(vf) if vf is not None else None}
                if self._real_pf(instance.guest, instance.host, instance.vm.failover)
                else {}
            ),
        }
        self.lab.state.save()

    def stop(self, instance: Instance) -> None:
        """Stop the instance's QEMU and remove its TAPs."""
        self._drop_console(instance)
        host = self.lab.host(instance.host)
        if instance.pid:
            stop_qemu(host, instance.pid, instance.files)
        self._undo(host, instance)
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

    def qemu_log_tail(self, instance: Instance, lines: int = 5) -> str:
        """The last lines QEMU logged for ``instance`` (its ``-D`` file), one line."""
        said = (
            self.lab.host(instance.host)
            .run(f"tail -n {lines} {instance.files.log} 2>/dev/null")
            .stdout.strip()
        )
        return " | ".join(said.splitlines()) or "(empty)"

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
        vm = instance.vm
        port = vm.primary_port if to == "primary" else vm.standby_tap
        host_net.steer(host, vm.mac, port, vm.taps, vf=vm.primary_vf, to_vf=to == "primary")

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
            vm = instance.vm
            host_net.unsteer(host, vm.mac, (vm.standby_tap, vm.primary_port), vm.taps)

    def close(self) -> None:
        """Nothing of its own to let go of: the consoles are the process's, shared, and end
        with the SSH connection they run over (``Lab.close``)."""
