"""QEMU guests on lab hosts (real servers): what the bench changed there, and undoing it.

On an emulated host everything a QEMU guest needs (its bridge, TAPs, QEMU process,
files) lives in the host's namespace, and goes with it. A lab host is a real server:
the bench takes its uplink into the guest bridge, makes TAPs, gives a VF to
vfio-pci, starts QEMU and keeps files under ``remote_root``. Each of these is written
to the lab's state directory *before* it is done (one file per host bridge and per
QEMU instance), so a teardown can undo it over SSH from the journal alone, even
after the controller was killed. A record is removed only once its undo succeeded;
while one is left, the journal stays too and ``npabench cleanup`` tries again.

Teardown order matters and is kept by :func:`undo_remote_guests`: QEMU first (it
holds the VF), then the TAPs and the VF's driver, then the bridge (the uplink gets
its address back), then the remote directory. The PF's own settings are restored
after this, by ``real_nics``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from bench.errors import HostError
from bench.lab.backends.real_nics import booted_host_gone
from bench.lab.lab import endpoint_from_json
from bench.lab.state import LabState
from bench.progress import Progress
from bench.qemu.host_net import BRIDGE, release_vf_mac, remove_taps
from bench.ssh import SshHost
from drivers.linux_pf import LinuxPf
from drivers.linux_pf_vfio import VFIO_DRIVER, unbind_vfio
from drivers.pf_control import PfControlError

#: Seconds a recorded QEMU gets after SIGTERM before SIGKILL.
TERM_GRACE_S = 5
#: What a lab host needs on its PATH to run the bench's QEMU guests: QEMU, python3 for
#: the socket relays and the steering watcher, iproute2's ``ip`` and ``bridge``.
HOST_TOOLS = ("qemu-system-x86_64", "python3", "ip", "bridge", "timeout")


def check_host_tools(host: SshHost) -> None:
    """HostError naming the host and what it lacks, before anything is changed there."""
    probe = "; ".join(f"command -v {tool} >/dev/null || echo {tool}" for tool in HOST_TOOLS)
    missing = host.run(probe, check=True).stdout.split()
    if missing:
        raise HostError(
            host.name,
            f"'hypervisor: qemu' needs {', '.join(missing)} on this host (not found on its "
            "PATH); install them there, or set 'hypervisor: emulated'",
        )


def remote_root(lab: str) -> str:
    """Where a lab keeps its files on a lab host (image, sockets, logs)."""
    return f"/var/tmp/npabench-{lab}"


def _records(state: LabState) -> Path:
    return state.directory / "remote-guests"


def _write(state: LabState, name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` whole or not at all (a torn record would stop every teardown)."""
    path = _records(state) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(record, sort_keys=True) + "\n")
    partial.replace(path)
    return path


def record_bridge(
    state: LabState, host: SshHost, bridge: str, uplink: str, address: str | None
) -> None:
    """Before the guest bridge takes ``uplink`` on lab host ``host``; HostError if the
    host has a ``bridge`` already (the bench would take it for its own and delete it)."""
    if host.run(f"ip link show dev {shlex.quote(bridge)}").exit_status == 0:
        raise HostError(
            host.name,
            f"it has a link named {bridge} already; the bench makes its own guest bridge "
            "by that name: remove it, or run the guests under another hypervisor",
        )
    _write(state, f"bridge--{host.name}", {"kind": "bridge", "host": host.name,
                                           "uplink": uplink, "address": address})  # fmt: skip


def check_free(host: SshHost, taps: tuple[str, ...], pidfile: Path) -> None:
    """HostError if a TAP name is taken or a QEMU of that PID file still runs on ``host``:
    what the bench would later remove must be its own."""
    taken = host.run(
        "; ".join(f"ip link show dev {shlex.quote(t)} >/dev/null 2>&1 && echo {t}" for t in taps)
        + "; true"
    ).stdout.split()
    if taken:
        raise HostError(host.name, f"links {', '.join(taken)} exist already (another lab's?)")
    if host.run(f"[ -s {shlex.quote(str(pidfile))} ]").exit_status == 0:
        raise HostError(host.name, f"{pidfile} exists already (a QEMU of this lab's?)")


def record_instance(
    state: LabState,
    host: str,
    *,
    directory: str,
    name: str,
    taps: tuple[str, ...],
    vf: dict[str, Any] | None,
    mac: str,
) -> None:
    """Before a QEMU instance is started on lab host ``host``: its files' directory (its
    PID file is there, and its command line names it), its TAPs, the VF it takes and the
    guest's MAC (which steering puts on that VF or in the PF's filter)."""
    record = {"kind": "instance", "host": host, "directory": directory, "name": name,
              "taps": list(taps), "vf": vf, "mac": mac}  # fmt: skip
    _write(state, f"instance--{host}--{Path(directory).name}--{name}", record)


def forget_instance(state: LabState, host: str, directory: str, name: str) -> None:
    """Once the instance was stopped and undone by the bench itself."""
    (_records(state) / f"instance--{host}--{Path(directory).name}--{name}.json").unlink(
        missing_ok=True
    )


def stop_command(directory: str, name: str) -> str:
    """The host command stopping the QEMU whose PID file is in ``directory`` (only if that
    process's command line still names the directory: a recycled PID is left alone)."""
    pidfile = shlex.quote(f"{directory}/{name}.pid")
    needle = shlex.quote(f"{directory}/")
    mine = f"tr '\\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -qF -- {needle}"
    return (
        f"p=$(cat {pidfile} 2>/dev/null); "
        f'if [ -n "$p" ] && {mine}; then kill -TERM $p; i=0; '
        f"while {mine} && [ $i -lt {TERM_GRACE_S * 10} ]; do sleep 0.1; i=$((i+1)); done; "
        f"{mine} && kill -KILL $p; sleep 0.2; ! {mine}; fi"
    )


def give_back_vf(host: SshHost, vf: dict[str, Any], mac: str | None) -> None:
    """The guest's MAC off the VF and out of the PF's filter; the VF back to its own
    driver (from vfio-pci), if vfio-pci still holds it."""
    release_vf_mac(host, str(vf["pf_netdev"]), int(vf["vf"]), mac)
    pf = LinuxPf(host, str(vf["pf_pci"]))
    if pf.num_vfs() > int(vf["vf"]) and pf.vf_device(int(vf["vf"])).driver == VFIO_DRIVER:
        unbind_vfio(pf, int(vf["vf"]))


def _undo_instance(host: SshHost, record: dict[str, Any]) -> None:
    stopped = host.run(stop_command(record["directory"], record["name"]), timeout=30.0)
    if stopped.exit_status != 0:
        raise HostError(host.name, f"QEMU of {record['directory']} did not stop")
    remove_taps(host, tuple(record["taps"]))
    if record.get("vf"):
        give_back_vf(host, record["vf"], record.get("mac"))


def _undo_bridge(host: SshHost, record: dict[str, Any]) -> None:
    uplink = shlex.quote(record["uplink"])
    commands = [f"ip link del {BRIDGE} 2>/dev/null; ip link set {uplink} up"]
    if record.get("address"):
        address = shlex.quote(record["address"])
        commands.append(
            f"ip -o addr show dev {uplink} | grep -qF -- ' {record['address']} ' || "
            f"ip addr add {address} dev {uplink}"
        )
    host.run(" && ".join(commands), check=True)


def undo_remote_guests(state: LabState, progress: Progress) -> list[str]:
    """Undo every record (instances first, then bridges, then each host's directory once
    nothing of it is left); return what was undone. A record that cannot be undone stays
    (see :func:`unundone`), and so does its host's directory."""
    undone: list[str] = []
    records = sorted(_records(state).glob("*.json"))
    ordered = [p for p in records if p.name.startswith("instance--")]
    ordered += [p for p in records if p.name.startswith("bridge--")]
    hosts: dict[str, SshHost | None] = {}
    kept: set[str] = set()
    try:
        for path in ordered:
            try:
                record = json.loads(path.read_text())
                name = str(record["host"])
            except (OSError, ValueError, KeyError) as err:
                progress(f"lab-host record {path.name} is unreadable ({err}); left for a look")
                continue
            if booted_host_gone(state, name):
                path.unlink()  # the lab's own QEMU host is gone, and everything on it
                continue
            if name not in hosts:
                hosts[name] = _connect(state, name, progress)
            host = hosts[name]
            if host is None:
                kept.add(name)
                continue
            try:
                (_undo_instance if record["kind"] == "instance" else _undo_bridge)(host, record)
            except (HostError, PfControlError) as err:
                progress(f"{name}: could not undo {path.stem}: {err}")
                kept.add(name)
                continue
            path.unlink()
            undone.append(f"{record['kind']} on {name} ({path.stem.split('--', 2)[-1]})")
        for name, host in hosts.items():
            if host is not None and name not in kept:
                host.run(f"rm -rf {shlex.quote(remote_root(state.lab))}")
    finally:
        for host in hosts.values():
            if host is not None:
                host.close()
    return undone


def _connect(state: LabState, name: str, progress: Progress) -> SshHost | None:
    endpoint = state.endpoints.get(name)
    if endpoint is None:
        progress(f"{name}: no SSH endpoint journalled; its QEMU guests are not undone")
        return None
    try:
        host = SshHost(endpoint_from_json(name, endpoint))
        host.connect()
    except HostError as err:
        progress(f"{name}: cannot reach it to undo its QEMU guests: {err}")
        return None
    return host


def hosts_not_undone(state: LabState) -> set[str]:
    """Lab hosts with a record left (their PFs must not be touched: a QEMU may hold a VF)."""
    hosts = set()
    for path in _records(state).glob("*.json"):
        parts = path.stem.split("--")
        if len(parts) >= 2:
            hosts.add(parts[1])
    return hosts


def unundone(state: LabState) -> list[str]:
    """Records of changes on lab hosts not yet undone."""
    records = sorted(_records(state).glob("*.json"))
    return [f"lab-host record {p.name} (not undone)" for p in records]
