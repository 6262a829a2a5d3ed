"""The emulated data path of a lab: NIC emulators, guest NICs and the processes behind them.

Runs after the emulated backend made the namespaces (hosts and guests, each
with its sshd) and before the instruments, in this order, because each step
needs the one before:

1. per NIC of an emulated host, a NIC emulator (``nic_emulators.nic``) in the
   host's namespace, wired to the NIC's uplink interface;
2. per guest of an emulated host, its one netdev: a persistent TAP ``eth0`` in
   the guest's namespace, with the guest's MAC, MTU and address;
3. per guest, its vmxnet3 device (``nic_emulators.vmxnet3``, the hypervisor
   side) in the namespace of the guest's host, told the control and PF-port
   sockets of the NIC it may take VFs from (on a host without NICs: the host
   interface its emulated path sends on);
4. per guest, once its device is ready, the guest's driver (``drivers.shell``)
   in the guest's namespace, serving the TAP.

Every process is journalled as soon as it is started and is given a config
file inside the lab's state directory, so a teardown finds it by the journal
or by its command line. Each prints ``READY`` when it serves; a process that
exits or stays silent past the deadline fails the bring-up with its log's tail.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import LabError
from bench.lab import naming
from bench.lab.processes import is_running, spawn_in_netns
from bench.lab.state import LabState, Resource
from bench.lab.system import run_ip_batch
from bench.progress import Progress
from bench.topology import Guest, Host, Nic, Topology
from nic_emulators.config import (
    NicConfig,
    ShellConfig,
    VmxConfig,
    guest_run_dir,
    nic_run_dir,
    write_config,
)

#: The guest's one netdev: a persistent TAP in its namespace, served by the shell.
GUEST_TAP = "eth0"
#: How long one stage may wait for its processes' READY at most (within the lab deadline).
READY_TIMEOUT_S = 20.0
#: Lines of a log shown when its process did not start.
LOG_TAIL_LINES = 8


@dataclass(frozen=True)
class Started:
    """A process that must say READY: what it is (for errors), its log and its journal entry."""

    what: str
    log: Path
    process: Resource
    #: Where the log stood when it started: a restarted process appends to its
    #: predecessor's log, whose READY must not count.
    offset: int = 0


def nic_control_socket(state_dir: Path, host: str, nic: str) -> Path:
    """The control socket of NIC ``nic`` of ``host`` (JSON lines, ``ControlClient``)."""
    return nic_run_dir(state_dir, host, nic) / "ctl.sock"


def nic_pf_socket(state_dir: Path, host: str, nic: str) -> Path:
    """The datagram socket of the NIC's PF port: the emulated path forwards through it."""
    return nic_run_dir(state_dir, host, nic) / "pf.sock"


def guest_control_socket(state_dir: Path, guest: str) -> Path:
    """The control socket of ``guest``'s vmxnet3 device (status, switch)."""
    return guest_run_dir(state_dir, guest) / "vmx.sock"


def start_data_path(
    topology: Topology, state: LabState, progress: Progress, deadline: float
) -> None:
    """Start every NIC emulator, guest NIC, vmxnet3 device and guest shell of the lab."""
    nics = [
        (host, nic)
        for host in topology.hosts
        if host.backend == "emulated" and host.hypervisor == "emulated"
        for nic in host.nics
        if nic.model is not None
    ]
    guests = topology.emulated_guests()
    if nics:
        _start_nics(topology, state, nics, deadline)
        shown = ", ".join(f"{h.name}/{n.name} {n.model}" for h, n in nics)
        progress(f"{len(nics)} NIC emulator(s) ready: {shown}")
    if not guests:
        return
    for guest in guests:
        _make_tap(topology.lab.name, guest)
    progress(f"{len(guests)} guest NIC(s) made (TAP {GUEST_TAP} in each guest's namespace)")
    devices = [_start_vmx(topology, state, guest) for guest in guests]
    wait_all_ready(devices, deadline)
    progress(f"{len(devices)} vmxnet3 device(s) ready")
    shells = [start_shell(topology, state, guest) for guest in guests]
    wait_all_ready(shells, deadline)
    progress(f"{len(shells)} guest shell(s) ready")


# -- NIC emulators ---------------------------------------------------------------


def _start_nics(
    topology: Topology, state: LabState, nics: Sequence[tuple[Host, Nic]], deadline: float
) -> None:
    lab = topology.lab.name
    started = []
    for host, nic in nics:
        assert nic.model is not None and nic.link is not None  # the loader makes sure
        run_dir = nic_run_dir(state.directory, host.name, nic.name)
        config = NicConfig(
            lab=lab,
            host=host.name,
            name=nic.name,
            model=nic.model,
            vfs=nic.vfs,
            uplink=nic.link,
            run_dir=str(run_dir),
        )
        path = write_config(config, run_dir / "nic.json")
        started.append(
            _spawn(
                state,
                naming.netns_name(lab, host.name),
                "nic_emulators.nic",
                path,
                what=f"NIC {nic.name} ({nic.model}) of host {host.name}",
                name=f"nic {host.name}/{nic.name}",
                log=run_dir / "nic.log",
            )
        )
    wait_all_ready(started, deadline)


# -- guests ----------------------------------------------------------------------


def _make_tap(lab: str, guest: Guest) -> None:
    """The guest's netdev: persistent, so it outlives a restart of the shell that serves it."""
    run_ip_batch(
        [
            f"tuntap add dev {GUEST_TAP} mode tap",
            f"link set {GUEST_TAP} address {guest.mac}",
            f"link set {GUEST_TAP} mtu {guest.mtu}",
            f"addr add {guest.address} dev {GUEST_TAP}",
            f"link set {GUEST_TAP} up",
        ],
        netns=naming.netns_name(lab, guest.name),
    )


def _start_vmx(topology: Topology, state: LabState, guest: Guest) -> Started:
    return start_device(topology, state, guest)


def device_config(
    topology: Topology,
    state_dir: Path,
    guest: Guest,
    *,
    instance: str = "",
    incoming: str = "",
    fail_incoming: bool = False,
) -> VmxConfig:
    """The config of ``guest``'s vmxnet3 device on ``guest.host`` (a migration destination
    passes the guest with that host, its ``instance`` tag and its ``incoming`` address)."""
    nic = topology.guest_nic(guest)
    return VmxConfig(
        lab=topology.lab.name,
        guest=guest.name,
        host=guest.host,
        mac=guest.mac,
        run_dir=str(guest_run_dir(state_dir, guest.name)),
        nic_control=str(nic_control_socket(state_dir, guest.host, nic.name)) if nic else "",
        nic_pf_port=(
            str(nic_pf_socket(state_dir, guest.host, nic.name))
            if nic and not guest.vswitch_uplink
            else ""
        ),
        uplink=guest.vswitch_uplink or ("" if nic else _plain_uplink(topology, guest)),
        mode="emulation" if guest.nic_mode == "emulation" else "npa",
        mtu=guest.mtu,
        memory_reserved=guest.memory_reserved,
        policy=guest.policy.port_policy(),
        instance=instance,
        incoming=incoming,
        fail_incoming=fail_incoming,
    )


def start_device(topology: Topology, state: LabState, guest: Guest, **options: Any) -> Started:
    """Start ``guest``'s vmxnet3 device on ``guest.host`` (``options``: see ``device_config``);
    journalled as ``vmxnet3 <guest>``. Wait for it with ``wait_all_ready``."""
    config = device_config(topology, state.directory, guest, **options)
    tag = f"-{config.instance}" if config.instance else ""
    run_dir = Path(config.run_dir)
    path = write_config(config, run_dir / f"vmx{tag}.json")
    return _spawn(
        state,
        naming.netns_name(topology.lab.name, guest.host),
        "nic_emulators.vmxnet3",
        path,
        what=f"vmxnet3 device of guest {guest.name} (on host {guest.host})",
        name=f"vmxnet3 {guest.name}",
        log=run_dir / f"vmx{tag}.log",
    )


def _plain_uplink(topology: Topology, guest: Guest) -> str:
    """Without a NIC, the host interface the guest's emulated path sends on: the one on the
    guest's switch, else the host's first (a plain vSwitch uplink); "" if it has none."""
    host = topology.host(guest.host)
    on_switch = [i.name for i in host.interfaces if i.switch == guest.switch]
    names = on_switch or [i.name for i in host.interfaces]
    return names[0] if names else ""


def start_shell(topology: Topology, state: LabState, guest: Guest) -> Started:
    lab = topology.lab.name
    run_dir = guest_run_dir(state.directory, guest.name)
    config = ShellConfig(lab=lab, guest=guest.name, tap=GUEST_TAP, run_dir=str(run_dir))
    path = write_config(config, run_dir / "shell.json")
    return _spawn(
        state,
        naming.netns_name(lab, guest.name),
        "drivers.shell",
        path,
        what=f"shell (guest driver) of guest {guest.name}",
        name=f"shell {guest.name}",
        log=run_dir / "shell.log",
    )


# -- processes -------------------------------------------------------------------


def _spawn(
    state: LabState, netns: str, module: str, config: Path, *, what: str, name: str, log: Path
) -> Started:
    """Start ``python -m module --config config`` in ``netns`` and journal it at once."""
    argv = [sys.executable, "-u", "-m", module, "--config", str(config)]
    offset = log.stat().st_size if log.exists() else 0
    process = spawn_in_netns(netns, argv, name, log)
    state.record(process)
    return Started(what, log, process, offset)


def wait_all_ready(started: Sequence[Started], deadline: float) -> None:
    """Wait until each process has printed READY; LabError for the first that does not."""
    until = min(deadline, time.monotonic() + READY_TIMEOUT_S)
    for item in started:
        _wait_ready(item, until)


def _wait_ready(item: Started, until: float) -> None:
    while True:
        if _said_ready(item.log, item.offset):
            return
        if not is_running(item.process):
            reason = "exited"
            break
        if time.monotonic() >= until:
            reason = "did not say READY in time"
            break
        time.sleep(0.02)
    if _said_ready(item.log, item.offset):  # it may have said so just before it was looked at
        return
    raise LabError(f"{item.what} did not start: {reason}; {item.log}: {_tail(item.log)}")


def _said_ready(log: Path, offset: int = 0) -> bool:
    try:
        with log.open("rb") as stream:
            stream.seek(offset)
            text = stream.read().decode(errors="replace")
    except FileNotFoundError:
        return False
    return any(line.strip().split(" ", 1)[0] == "READY" for line in text.splitlines())


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError as err:
        return f"(no log: {err.strerror})"
    return " | ".join(lines[-LOG_TAIL_LINES:]) or "(empty)"
