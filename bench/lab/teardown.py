"""Undo a lab from its state journal: processes, namespaces, links, files.

Works from the journal alone (no topology needed) so that ``npabench cleanup``
can remove a lab whose controller died; then sweeps by ownership marks
(namespace prefix, link alias) for anything a journal could have missed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

from bench.lab import naming
from bench.lab.processes import stop_netns_processes, stop_process
from bench.lab.state import LabState

Progress = Callable[[str], None]


def _quiet(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _existing_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _owned_links(lab: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=False)
    try:
        links = json.loads(out.stdout or "[]")
    except ValueError:
        return []
    alias = naming.link_alias(lab)
    return [link["ifname"] for link in links if link.get("ifalias") == alias]


def tear_down(state: LabState, progress: Progress) -> list[str]:
    """Remove everything ``state`` records (and anything else marked as this lab's)."""
    state.status = "stopping"
    if state.file.exists():
        state.save()
    removed: list[str] = []
    for resource in reversed(state.resources):
        if resource.kind == "process":
            stop_process(resource)
            removed.append(f"process {resource.pid} ({resource.name})")

    namespaces = [r.name for r in state.resources if r.kind == "netns"]
    prefix = naming.netns_prefix(state.lab)
    namespaces += sorted(ns for ns in _existing_netns() if ns.startswith(prefix))
    for ns in dict.fromkeys(namespaces):
        if ns not in _existing_netns():
            continue
        stop_netns_processes(ns)
        if _quiet(["ip", "netns", "del", ns]):
            removed.append(f"namespace {ns}")

    links = [r.name for r in state.resources if r.kind == "link"] + _owned_links(state.lab)
    for link in dict.fromkeys(links):
        if _quiet(["ip", "link", "del", link]):
            removed.append(f"link {link}")

    shutil.rmtree(state.directory, ignore_errors=True)
    removed.append(f"state {state.directory}")
    progress(f"lab {state.lab} torn down ({len(removed)} items)")
    return removed


def cleanup_lab(lab: str, progress: Progress) -> list[str]:
    """Tear down ``lab`` from its journal, or sweep its marks if the journal is gone."""
    state = LabState.load(lab) or LabState(lab=lab, directory=LabState.directory_of(lab))
    return tear_down(state, progress)
