"""Real NICs of lab hosts: record each PF as it was, set it up as the topology says, and
put it back at ``down`` (or when ``up`` or a run fails).

The original state (VF count and every VF's settings) is written to the lab's state
directory *before* anything is changed, one file per PF, so a teardown works from the
journal alone, even after the controller was killed. A file is removed only once its
PF reads back as recorded; while one is left, the lab's journal stays too, and
``npabench cleanup`` tries again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from pathlib import Path

from bench.errors import HostError
from bench.lab.lab import endpoint_from_json
from bench.lab.processes import is_running
from bench.lab.state import LabState
from bench.progress import Progress
from bench.ssh import SshHost
from bench.topology import Host, Nic
from drivers.linux_pf import RESTORE_ORDER, LinuxPf, pf_state_from_json, pf_state_to_json
from drivers.pf_control import PfControlError, VfSetting


def _records(state: LabState) -> Path:
    return state.directory / "pfs"


def _record_file(state: LabState, host: str, nic: str) -> Path:
    return _records(state) / f"{host}--{nic}.json"


def configure_real_nics(
    hosts: Sequence[Host], connections: Mapping[str, SshHost], state: LabState, progress: Progress
) -> None:
    """Record every real PF of ``hosts``, then give it the topology's VFs and settings."""
    for host in hosts:
        for nic in host.nics:
            if nic.pci is None:
                continue
            pf = LinuxPf(connections[host.name], nic.pci)
            original = pf.snapshot()
            record = _record_file(state, host.name, nic.name)
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(
                json.dumps({"host": host.name, "nic": nic.name, "pci": nic.pci})
                + "\n"
                + pf_state_to_json(original)
                + "\n"
            )
            _configure(pf, nic)
            progress(
                f"{host.name}/{nic.name}: {nic.vfs} VFs (was {original.numvfs}), "
                f"{len(nic.vf_config)} configured"
            )


def _configure(pf: LinuxPf, nic: Nic) -> None:
    if nic.vfs > pf.total_vfs():
        raise PfControlError(
            pf=pf.name, setting="sriov_numvfs", action=f"create {nic.vfs} VFs",
            reason="out of range", detail=f"the PF can have at most {pf.total_vfs()}",
        )  # fmt: skip
    pf.set_num_vfs(nic.vfs)
    for spec in nic.vf_config:
        for setting in RESTORE_ORDER:
            value = getattr(spec, setting.value)
            if value is not None:
                pf.set_vf(spec.vf, VfSetting(setting), value)


def restore_real_nics(
    state: LabState, progress: Progress, leave: Set[str] = frozenset()
) -> list[str]:
    """Put back every recorded PF, but those of hosts in ``leave`` (a QEMU guest there
    may still hold a VF); return what was restored. A PF that cannot be restored keeps
    its record (see :func:`unrestored_pfs`); the others are still done."""
    restored: list[str] = []
    for record in sorted(_records(state).glob("*.json")):
        header, body = record.read_text().split("\n", 1)
        where = json.loads(header)
        if where["host"] in leave and not booted_host_gone(state, where["host"]):
            progress(
                f"{where['host']}/{where['nic']}: not restored: a QEMU guest there is not undone"
            )
            continue
        endpoint = state.endpoints.get(where["host"])
        if booted_host_gone(state, where["host"]):
            record.unlink()  # the PF was the lab's own QEMU guest's: it went with it
            restored.append(f"PF {where['host']}/{where['nic']} gone with its QEMU host")
            continue
        if endpoint is None:
            progress(f"{where['host']}/{where['nic']}: no SSH endpoint journalled; not restored")
            continue
        try:
            with SshHost(endpoint_from_json(where["host"], endpoint)) as host:
                LinuxPf(host, where["pci"]).restore(pf_state_from_json(body))
        except (HostError, PfControlError) as err:
            progress(f"{where['host']}/{where['nic']}: could not restore the PF: {err}")
            continue
        record.unlink()
        restored.append(f"PF {where['host']}/{where['nic']} restored")
    return restored


def booted_host_gone(state: LabState, host: str) -> bool:
    """Whether ``host`` is a QEMU host this lab booted, and its QEMU no longer runs."""
    qemu = [r for r in state.resources if r.kind == "process" and r.name == f"qemu {host}"]
    return bool(qemu) and not any(is_running(r) for r in qemu)


def unrestored_pfs(state: LabState) -> list[str]:
    """PFs whose original state is recorded but not yet put back."""
    return [f"PF record {p.name} (not restored)" for p in sorted(_records(state).glob("*.json"))]
