"""Undo a lab from its state journal: processes, namespaces, links, files.

Works from the journal alone (no topology needed) so that ``npabench cleanup``
can remove a lab whose controller died; then sweeps by ownership marks (the
namespace prefix, the link alias, the state directory in a daemon's command
line, the ``/dev/shm/npabench-<lab>-`` prefix of shared memory) for anything a
journal could have missed, and checks that nothing is left before it deletes
the journal. Runs shielded from Ctrl-C and SIGTERM.

Guests are covered by the same marks: a guest's namespace is
``npa-<lab>-<guest>``, and the NIC emulators, vmxnet3 devices and guest shells
all get their config file from the state directory on their command line.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

from bench.errors import LabError
from bench.lab import naming
from bench.lab.backends.real_nics import restore_real_nics, unrestored_pfs
from bench.lab.processes import (
    is_running,
    netns_pids,
    pids_mentioning,
    running_process,
    stop_processes,
)
from bench.lab.remote_guests import hosts_not_undone, undo_remote_guests, unundone
from bench.lab.state import LabState
from bench.progress import Progress
from bench.signals import shielded
from nic_emulators.config import SHM_DIR, SHM_PREFIX, lab_shm_files


def _quiet(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def lab_namespaces(lab: str) -> list[str]:
    """Namespaces on this machine that belong to ``lab`` (by name prefix)."""
    return sorted(n for n in _namespaces() if n.startswith(naming.netns_prefix(lab)))


def labs_with_namespaces() -> set[str]:
    """Names of labs that own a namespace (``npa-<lab>-<host>``; lab names have no '-')."""
    prefix = naming.NETNS_PREFIX
    return {n.removeprefix(prefix).split("-", 1)[0] for n in _namespaces() if n.startswith(prefix)}


def _link_aliases() -> dict[str, str]:
    """Every root-namespace link and its alias ('' if none)."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=False)
    try:
        links = json.loads(out.stdout or "[]")
    except ValueError:
        return {}
    return {link["ifname"]: str(link.get("ifalias", "")) for link in links}


def lab_links(lab: str) -> list[str]:
    """Root-namespace links marked as ``lab``'s (by alias)."""
    alias = naming.link_alias(lab)
    return [name for name, mark in _link_aliases().items() if mark == alias]


def labs_with_links() -> set[str]:
    """Names of labs that own a root-namespace link (found by alias)."""
    prefix = naming.LINK_ALIAS_PREFIX
    return {m.removeprefix(prefix) for m in _link_aliases().values() if m.startswith(prefix)}


def labs_with_shared_memory() -> set[str]:
    """Names of labs with a shared-memory file (``npabench-<lab>-...``; lab names have no '-')."""
    return {
        path.name.removeprefix(SHM_PREFIX).split("-", 1)[0]
        for path in SHM_DIR.glob(f"{SHM_PREFIX}*-*")
    }


def lab_processes(state: LabState) -> list[int]:
    """Live processes of the lab: journalled, or naming its state directory."""
    journalled = [r.pid for r in state.resources if r.kind == "process" and is_running(r)]
    return sorted(set(journalled) | set(pids_mentioning(f"{state.directory}/")))


def leftovers(state: LabState) -> list[str]:
    """What of the lab is still on this machine (empty when it is gone)."""
    found = [f"namespace {ns}" for ns in lab_namespaces(state.lab)]
    found += [f"link {link}" for link in lab_links(state.lab)]
    found += [f"process {pid}" for pid in lab_processes(state)]
    found += [f"shared memory {path}" for path in lab_shm_files(state.lab)]
    found += unrestored_pfs(state)
    found += unundone(state)
    return found


def tear_down(state: LabState, progress: Progress) -> list[str]:
    """Remove everything of the lab; return what was removed.

    Raises LabError naming what could not be removed (the journal is kept
    then, so a later ``npabench cleanup`` can try again).
    """
    with shielded():
        return _tear_down(state, progress)


def _tear_down(state: LabState, progress: Progress) -> list[str]:
    state.status = "stopping"
    if state.file.exists():
        with contextlib.suppress(OSError):  # a full disk must not stop the teardown
            state.save()
    removed: list[str] = []

    # Lab hosts first, while they still answer: their QEMU guests (which hold VFs), then
    # the real NICs (a QEMU lab host the bench booted among them).
    removed += undo_remote_guests(state, progress)
    removed += restore_real_nics(state, progress, leave=hosts_not_undone(state))
    processes = [running_process(pid, "lab process") for pid in lab_processes(state)]
    stop_processes(processes)
    removed += [f"process {p.pid}" for p in processes]

    recorded = [r.name for r in state.resources if r.kind == "netns"]
    existing = set(lab_namespaces(state.lab))
    for ns in dict.fromkeys([*recorded, *sorted(existing)]):
        if ns not in existing:
            continue
        inside = [running_process(pid, ns) for pid in netns_pids(ns)]
        stop_processes(inside)
        removed += [f"process {p.pid}" for p in inside]
        if _quiet(["ip", "netns", "del", ns]):
            removed.append(f"namespace {ns}")

    owned = lab_links(state.lab)
    recorded = [r.name for r in state.resources if r.kind == "link"]
    for link in dict.fromkeys([*recorded, *owned]):
        if link in owned and _quiet(["ip", "link", "del", link]):
            removed.append(f"link {link}")

    # VF rings and buffers outlive their processes in /dev/shm; only now are none mapped.
    for path in lab_shm_files(state.lab):
        with contextlib.suppress(OSError):  # what stays is reported by leftovers() below
            path.unlink()
            removed.append(f"shared memory {path}")

    left = leftovers(state)
    if left:
        raise LabError(
            f"lab {state.lab}: could not remove {', '.join(left)}; "
            f"the journal stays in {state.directory} for `npabench cleanup {state.lab}`"
        )
    if state.directory.exists():
        shutil.rmtree(state.directory, ignore_errors=True)
        removed.append(f"state {state.directory}")
    progress(f"lab {state.lab} torn down ({len(removed)} items)")
    return removed


def cleanup_lab(lab: str, progress: Progress) -> list[str]:
    """Tear down ``lab`` from its journal, or by its marks alone if the journal is unreadable."""
    try:
        state = LabState.load(lab)
    except LabError as err:
        progress(f"{err}; removing lab {lab} by its marks instead")
        state = None
    return tear_down(state or LabState(lab=lab, directory=LabState.directory_of(lab)), progress)
