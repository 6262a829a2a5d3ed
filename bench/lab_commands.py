"""``npabench cleanup`` and ``npabench status``: what labs are on this machine, and how one is.

``cleanup`` finds labs by their journals and by their marks (namespaces,
links, shared memory), so it works after the controller was killed; ``status``
shows one lab's hosts and each guest's NIC mode as its vmxnet3 device reports it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import LabError, UsageError
from bench.progress import to_stderr as progress
from bench.topology import load_topology

if TYPE_CHECKING:  # bench.lab pulls scapy: `npabench` imports this module for its parsers only
    from bench.lab import LabState

AddParser = Callable[[str, str], argparse.ArgumentParser]


def cmd_cleanup(args: argparse.Namespace) -> int:
    from bench.lab import cleanup_lab

    labs = args.lab or _labs_on_this_machine()
    if args.list:
        for lab in labs:
            print(f"{lab}: {_describe(lab)}")
        return 0
    if not labs:
        progress("no lab to clean up")
    busy = []
    for lab in labs:
        state = _readable_state(lab)
        if state is not None and state.controller_alive() and not args.force:
            busy.append(f"{lab} (in use by process {state.controller_pid})")
            continue
        for item in cleanup_lab(lab, progress):
            print(f"removed {item}")
    if busy:
        message = f"left alone, still in use: {', '.join(busy)}; --force removes them"
        if args.lab:  # named explicitly: refusing is an error; found by the scan: a note
            raise UsageError(message)
        progress(message)
    return 0


def _describe(lab: str) -> str:
    from bench.lab import LabState

    try:
        state = LabState.load(lab)
    except LabError:
        return "journal unreadable (cleanup removes it by its marks)"
    if state is None:
        return "no journal: leftovers of a lost lab"
    if state.controller_alive():
        return f"{state.status}, in use by process {state.controller_pid}"
    return f"{state.status} (from {state.topology or 'unknown topology'})"


def _readable_state(lab: str) -> LabState | None:
    from bench.lab import LabState

    try:
        return LabState.load(lab)
    except LabError:
        return None  # cleanup_lab reports it and sweeps by marks


def _labs_on_this_machine() -> list[str]:
    """Labs with a state directory, plus labs whose namespaces, links or shared memory
    outlived their state."""
    from bench.lab import LabState
    from bench.lab.teardown import labs_with_links, labs_with_namespaces, labs_with_shared_memory

    found = labs_with_namespaces() | labs_with_links() | labs_with_shared_memory()
    return sorted(set(LabState.known_labs()) | found)


def cmd_status(args: argparse.Namespace) -> int:
    from bench.lab import Lab, LabState

    path = Path(args.topology)
    topo = load_topology(path)
    state = LabState.load(topo.lab.name)
    info: dict[str, Any] = (
        Lab(topo, path, state).status()
        if state is not None
        else {
            "lab": topo.lab.name,
            "status": "down",
            "topology": str(path),
            "hosts": [],
            "nics": [],
            "guests": [],
        }
    )
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"lab {info['lab']}: {info['status']}")
    for host in info["hosts"]:
        ssh = host.get("ssh")
        where = f"{ssh['user']}@{ssh['address']}:{ssh['port']}" if ssh else "-"
        print(f"  {host['name']:<16} {host['backend']:<9} {host['role']:<18} {where}")
    if info["guests"]:
        print("guests:")
    for guest in info["guests"]:
        print(f"  {_guest_line(guest)}")
    return 0


def _guest_line(guest: dict[str, Any]) -> str:
    """One guest in ``status``: where it runs and what its vmxnet3 device says."""
    head = f"{guest['name']:<16} on {guest['host']:<12}"
    if guest["mode"] == "unreachable":
        return f"{head} unreachable: {guest.get('error', '')}"
    vf = "-" if guest.get("vf") is None else str(guest["vf"])
    plugin = guest.get("plugin") or "-"
    reason = f"  ({guest['reason']})" if guest.get("reason") else ""
    return f"{head} {guest['mode']:<12} vf {vf:<3} plugin {plugin}{reason}"


def add_cleanup_parser(add: AddParser) -> None:
    p = add("cleanup", "remove every trace of labs on this machine, even after a crash")
    p.add_argument("lab", nargs="*", help="lab names (default: every lab found here)")
    p.add_argument(
        "--force", action="store_true", help="also labs whose controller (up/run) is still running"
    )
    p.add_argument("--list", action="store_true", help="only list the labs found, remove nothing")
    p.set_defaults(func=cmd_cleanup)


def add_status_parser(add: AddParser) -> None:
    p = add(
        "status",
        "show whether the lab is up, how to reach each host and guest, and each guest's "
        "NIC mode (passthrough or emulation, why, which VF and plugin)",
    )
    p.add_argument("topology", help="topology file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
