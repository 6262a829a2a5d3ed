"""Emulated instruments of a lab: SCPI emulators on real TCP sockets, wired to the lab.

For every instrument whose resource is ``emulated`` the bench starts an
emulator process (``bench.instruments.emulators.server``) on 127.0.0.1 and
records its VISA resource string in the lab state, so drivers reach it
through pyvisa-py exactly as they reach a real instrument. Wiring is a
script in the lab's state directory that the emulator runs on every state
change: an attenuator channel whose light stops (shutter closed, or
attenuation past the receiver's threshold) takes its link down — the
root-namespace end of the host's veth, so the host sees NO-CARRIER as it
would on hardware; a power-supply channel feeding a NIC powers the NIC
emulator off and on (its VFs vanish and re-enumerate, an FPGA board's CSR
endpoint goes away) and takes the NIC's link down with it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench.errors import LabError
from bench.lab import naming
from bench.lab.procfs import start_ticks
from bench.lab.state import LabState, Resource
from bench.progress import Progress
from bench.topology import Instrument, Topology
from nic_emulators.config import nic_run_dir

READY_TIMEOUT_S = 20.0


def _link_of(topology: Topology, target: str) -> str:
    """Root-namespace veth of HOST/INTERFACE (what an attenuator channel acts on)."""
    host_name, iface_name = target.split("/", 1)
    emulated = [h for h in topology.hosts if h.backend == "emulated"]
    for h, host in enumerate(emulated):
        if host.name == host_name:
            for i, iface in enumerate(host.interfaces):
                if iface.name == iface_name:
                    return naming.data_veth(topology.lab.name, h, i)
    raise LabError(f"wiring to {target}: not an interface of an emulated host")


def _power_action(topology: Topology, target: str, directory: Path) -> str:
    """Shell commands powering NIC HOST/NIC with ``$2`` (up: on, down: off)."""
    host_name, nic_name = target.split("/", 1)
    host = topology.host(host_name)
    nic = host.nic(nic_name)
    if nic is None:
        raise LabError(f"wiring to {target}: host {host_name} has no NIC {nic_name}")
    control = nic_run_dir(directory.parents[1], host_name, nic_name) / "ctl.sock"
    power = (
        f"{shlex.quote(sys.executable)} -m nic_emulators.nicctl {shlex.quote(str(control))} POWER "
        'on=$([ "$2" = up ] && echo true || echo false) >/dev/null'
    )
    link = nic.link or (host.interfaces[0].name if host.interfaces else None)
    if link is None:
        return power
    return f"{power}; ip link set {_link_of(topology, f'{host_name}/{link}')} $2"


def wiring_script(topology: Topology, instrument: Instrument, directory: Path) -> Path:
    """The script the emulator runs on each change: ``SCRIPT CHANNEL LINK_STATE``."""
    lines = [
        "#!/bin/sh",
        f"# Wiring of {instrument.name} ({instrument.kind}) in lab {topology.lab.name}.",
        f'echo "$(date +%s.%N) channel $1 -> $2" >> {shlex.quote(str(directory / "changes.log"))}',
        'case "$1" in',
    ]
    for wire in instrument.wiring:
        if instrument.kind == "optical-attenuator":
            action = f"ip link set {_link_of(topology, wire.to)} $2"
        else:
            action = _power_action(topology, wire.to, directory)
        lines.append(f"  {wire.channel}) {action} ;;")
    lines += ["esac", ""]
    script = directory / "wiring.sh"
    script.write_text("\n".join(lines))
    script.chmod(0o755)
    return script


def start_instruments(topology: Topology, state: LabState, progress: Progress) -> dict[str, str]:
    """Start an emulator for each emulated instrument; return name -> VISA resource string."""
    resources: dict[str, str] = {}
    started: list[tuple[Instrument, subprocess.Popen[bytes], Path]] = []
    for instrument in topology.instruments:
        if not instrument.emulated:
            resources[instrument.name] = instrument.resource
            continue
        directory = state.directory / "instruments" / instrument.name
        directory.mkdir(parents=True, exist_ok=True)
        script = wiring_script(topology, instrument, directory)
        out = directory / "emulator.out"
        argv = [
            sys.executable,
            "-m",
            "bench.instruments.emulators.server",
            "--kind",
            instrument.kind,
            "--channels",
            str(instrument.channels),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--serial",
            f"{topology.lab.name}-{instrument.name}",
            "--on-change-cmd",
            f"{script} {{channel}} {{link_state}}",
        ]
        powered = sorted(w.channel for w in instrument.wiring)
        if instrument.kind == "power-supply" and powered:
            # The boards a supply feeds start powered (their NIC emulators do).
            channels = ",".join(str(c) for c in powered)
            argv += ["--setup", f"VOLT 12,(@{channels});OUTP ON,(@{channels})"]
        with out.open("wb") as sink:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        state.record(
            Resource("process", f"instrument {instrument.name}", proc.pid, start_ticks(proc.pid))
        )
        started.append((instrument, proc, out))
    deadline = time.monotonic() + READY_TIMEOUT_S
    for instrument, proc, out in started:
        port = _wait_ready(instrument, proc, out, deadline)
        resources[instrument.name] = f"TCPIP0::127.0.0.1::{port}::SOCKET"
    if started:
        progress(f"{len(started)} emulated instrument(s) listening")
    return resources


def _wait_ready(
    instrument: Instrument, proc: subprocess.Popen[bytes], out: Path, deadline: float
) -> int:
    while time.monotonic() < deadline:
        for line in out.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                return int(line.split()[1])
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    tail = " | ".join(out.read_text(errors="replace").strip().splitlines()[-5:])
    raise LabError(f"emulator of instrument {instrument.name} did not start: {tail or 'no output'}")
