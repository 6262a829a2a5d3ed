"""Backend registry: the topology's ``backend:`` value -> the class that provisions such hosts.

A new backend is one new module with a class decorated by ``register_backend``
(as labgrid's factory maps YAML keys to classes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from bench.lab.state import LabState
from bench.progress import Progress
from bench.ssh import SshEndpoint
from bench.topology import Host, Topology


class Backend(Protocol):
    """Makes the hosts of one backend reachable over SSH; the lab state journals what it made."""

    def provision(self, hosts: Sequence[Host], deadline: float) -> dict[str, SshEndpoint]: ...


BackendFactory = Callable[[Topology, Path, LabState, Progress], Backend]
_BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class decorator: make a backend available under ``backend: <name>``."""

    def add(factory: BackendFactory) -> BackendFactory:
        _BACKENDS[name] = factory
        return factory

    return add


def backend_for(name: str) -> BackendFactory:
    """The factory registered for ``name``."""
    try:
        return _BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise KeyError(f"no backend {name!r} (known: {known})") from None
