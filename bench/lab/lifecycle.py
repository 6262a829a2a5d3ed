"""Bring a lab up, find a lab that is up, bring it down.

``bring_up`` makes the hosts (and their guests' namespaces) with each backend,
then the emulated data path (NIC emulators, guest NICs, vmxnet3 devices,
guest shells), then the QEMU guests of QEMU hosts, then the instruments. It
journals as it goes and, if anything fails or the user presses Ctrl-C, tears
down what it made before re-raising:
a failed ``up`` leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.errors import LabError
from bench.lab.backends import backend_for
from bench.lab.data_path import start_data_path
from bench.lab.instruments import start_instruments
from bench.lab.lab import Lab, endpoint_to_json
from bench.lab.qemu_guests import start_qemu_guests
from bench.lab.state import LabState
from bench.lab.teardown import tear_down
from bench.progress import Progress, silent
from bench.topology import Topology, load_topology


def bring_up(topology_path: Path, progress: Progress = silent) -> Lab:
    """Make the lab of ``topology_path`` and return it; on any failure, leave nothing behind."""
    topology = load_topology(topology_path)
    return bring_up_topology(topology, topology_path, progress)


def bring_up_topology(topology: Topology, topology_path: Path, progress: Progress = silent) -> Lab:
    """Like ``bring_up`` for an already loaded topology."""
    started = time.monotonic()
    deadline = started + topology.limits.lab_up_timeout_s
    state = LabState.create(topology.lab.name, topology_path)
    try:
        by_backend: dict[str, list[str]] = {}
        for host in topology.hosts:
            by_backend.setdefault(host.backend, []).append(host.name)
        for backend_name, names in by_backend.items():
            backend = backend_for(backend_name)(topology, topology_path, state, progress)
            endpoints = backend.provision([topology.host(n) for n in names], deadline)
            state.endpoints.update({n: endpoint_to_json(e) for n, e in endpoints.items()})
            state.save()
        # NICs, guest NICs and the processes behind them need the namespaces made above;
        # instruments come last, as their wiring acts on the finished lab.
        start_data_path(topology, state, progress, deadline)
        if topology.qemu_guests() or any(h.hypervisor == "qemu" for h in topology.hosts):
            with Lab(topology, topology_path, state) as lab:
                start_qemu_guests(lab, progress, deadline)
        state.instruments = start_instruments(topology, state, progress)
        state.status = "up"
        state.save()
    except BaseException:
        progress("bring-up failed; tearing down what was made")
        try:
            tear_down(state, progress)
        except LabError as err:  # report it, but the original failure is the news
            progress(str(err))
        raise
    progress(f"lab {topology.lab.name} up in {time.monotonic() - started:.2f} s")
    return Lab(topology, topology_path, state)


def attach(topology_path: Path) -> Lab:
    """The lab of ``topology_path`` if it is up; LabError saying how to bring it up if not."""
    topology = load_topology(topology_path)
    state = LabState.load(topology.lab.name)
    if state is None or state.status != "up":
        what = "not up" if state is None else f"in state {state.status!r}"
        raise LabError(
            f"lab {topology.lab.name!r} is {what}; run `npabench up {topology_path}` "
            f"(or `npabench cleanup {topology.lab.name}` to clear a broken one)"
        )
    if state.topology and state.topology != str(topology_path.resolve()):
        raise LabError(
            f"lab {topology.lab.name!r} is up from another topology file, {state.topology}; "
            f"two files must not share a lab name (this one is {topology_path})"
        )
    return Lab(topology, topology_path, state)


def bring_down(topology_path: Path, progress: Progress = silent) -> list[str]:
    """Tear down the lab of ``topology_path``; a lab that is not up is not an error."""
    topology = load_topology(topology_path)
    state = LabState.load(topology.lab.name)
    if state is None:
        progress(f"lab {topology.lab.name} is not up")
        return []
    return tear_down(state, progress)
