"""The state file of a running lab: a write-ahead journal of everything the bench made.

A resource is recorded *before* it is created, and the file is replaced
atomically on every change, so that ``npabench cleanup`` can undo a lab even
after the controller was killed with SIGKILL halfway through ``up``. Removing
something that was recorded but never made is harmless.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import LabError
from bench.lab.procfs import is_alive, start_ticks

#: One writer at a time within a process (migrations of several guests run in threads).
_SAVE_LOCK = threading.Lock()

#: Where labs keep their state; /run is a tmpfs, so a reboot forgets stale labs.
DEFAULT_STATE_ROOT = Path("/run/npabench")


def state_root() -> Path:
    """The directory holding one sub-directory per lab (``NPABENCH_STATE_DIR`` overrides)."""
    return Path(os.environ.get("NPABENCH_STATE_DIR", str(DEFAULT_STATE_ROOT)))


@dataclass(frozen=True)
class Resource:
    """One thing the bench made: a namespace, a root-namespace link, a process, a directory."""

    kind: str  # "netns" | "link" | "process"
    name: str
    pid: int = 0
    start_ticks: int = 0  # /proc/<pid>/stat starttime, to never kill a recycled PID


@dataclass
class LabState:
    """What is known about one lab on this machine."""

    lab: str
    directory: Path
    topology: str = ""
    status: str = "starting"  # starting | up | stopping
    controller_pid: int = 0
    controller_ticks: int = 0  # start time of the controller, to tell a live one from a reused PID
    started_at: float = 0.0
    resources: list[Resource] = field(default_factory=list)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Instrument name -> VISA resource string (emulators' filled in at `up`).
    instruments: dict[str, str] = field(default_factory=dict)
    #: Guests that live-migrated: guest -> {"host", "nic", "instance"} (where it runs now).
    placement: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Migrations started so far (each destination device gets the next number).
    migrations: int = 0

    @property
    def file(self) -> Path:
        return self.directory / "state.json"

    @staticmethod
    def directory_of(lab: str) -> Path:
        """State directory of ``lab`` (it may not exist)."""
        return state_root() / lab

    @classmethod
    def create(cls, lab: str, topology: Path) -> LabState:
        """Start the journal of a new lab; refuse if that lab is already there."""
        directory = cls.directory_of(lab)
        state = cls(lab=lab, directory=directory, topology=str(topology.resolve()))
        if state.file.exists():
            raise LabError(
                f"lab {lab!r} is already up (state in {directory}); "
                f"run `npabench down {topology}` or `npabench cleanup {lab}` first"
            )
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        state.controller_pid = os.getpid()
        state.controller_ticks = start_ticks(state.controller_pid)
        state.started_at = time.time()
        state.save()
        return state

    @classmethod
    def load(cls, lab: str) -> LabState | None:
        """The saved state of ``lab``, or None if it is not up."""
        directory = cls.directory_of(lab)
        try:
            raw = json.loads((directory / "state.json").read_text())
            fields = {f.name for f in dataclasses.fields(Resource)}
            return cls(
                lab=str(raw.get("lab", lab)),
                directory=directory,
                topology=str(raw.get("topology", "")),
                status=str(raw.get("status", "starting")),
                controller_pid=int(raw.get("controller_pid", 0)),
                controller_ticks=int(raw.get("controller_ticks", 0)),
                started_at=float(raw.get("started_at", 0.0)),
                resources=[
                    Resource(**{k: v for k, v in r.items() if k in fields})
                    for r in raw.get("resources", [])
                ],
                endpoints=dict(raw.get("endpoints", {})),
                instruments=dict(raw.get("instruments", {})),
                placement=dict(raw.get("placement", {})),
                migrations=int(raw.get("migrations", 0)),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise LabError(
                f"the journal of lab {lab!r} ({directory / 'state.json'}) is unreadable: {err}"
            ) from None

    @staticmethod
    def known_labs() -> list[str]:
        """Names of every lab with a state directory on this machine."""
        root = state_root()
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir())

    def controller_alive(self) -> bool:
        """Whether the process that brought the lab up still runs (an `up` or a run going on)."""
        return self.controller_pid != os.getpid() and is_alive(
            self.controller_pid, self.controller_ticks
        )

    def record(self, *resources: Resource) -> None:
        """Journal resources about to be created (write-ahead)."""
        self.resources.extend(resources)
        self.save()

    def forget(self, resource: Resource) -> None:
        """Drop a resource that is gone (a migrated guest's device on its old host)."""
        self.resources = [r for r in self.resources if r != resource]
        self.save()

    def save(self) -> None:
        """Replace the state file atomically."""
        payload = {
            "lab": self.lab,
            "topology": self.topology,
            "status": self.status,
            "controller_pid": self.controller_pid,
            "controller_ticks": self.controller_ticks,
            "started_at": self.started_at,
            "resources": [asdict(r) for r in self.resources],
            "endpoints": self.endpoints,
            "instruments": self.instruments,
            "placement": self.placement,
            "migrations": self.migrations,
        }
        tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
        with _SAVE_LOCK:
            tmp.write_text(json.dumps(payload, indent=1))
            tmp.replace(self.file)
