"""What the bench tells each data-path process at start: one JSON file per process.

The controller writes these files into the lab's state directory and passes
the path as ``--config``; the path names the lab's state directory, so a sweep
that looks for processes mentioning it finds every one of them.

Processes and their configs:

* ``python -m nic_emulators.nic --config F`` (``NicConfig``): one SR-IOV NIC on
  a host, run in the host's network namespace.
* ``python -m nic_emulators.vmxnet3 --config F`` (``VmxConfig``): one guest's
  vmxnet3 device (the hypervisor side: emulation backend and the switch
  sequences), run in the network namespace of the guest's current host.
* ``python -m drivers.shell --config F`` (``ShellConfig``): the guest's driver
  (vmxnet3 shell + plugin), run in the guest's network namespace.

Each prints ``READY`` on stdout once it serves.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: Every shared-memory file the bench makes is ``/dev/shm/<SHM_PREFIX><lab>-...``.
SHM_PREFIX = "npabench-"
SHM_DIR = Path("/dev/shm")


def shm_name(lab: str, *parts: str) -> str:
    """Name (not path) of a shared-memory file of ``lab``."""
    return SHM_PREFIX + "-".join((lab, *parts))


def lab_shm_files(lab: str) -> list[Path]:
    """Shared-memory files of ``lab`` that exist now (for teardown and leftover checks)."""
    return sorted(SHM_DIR.glob(f"{SHM_PREFIX}{lab}-*"))


def nic_run_dir(state_dir: Path, host: str, nic: str) -> Path:
    """Directory of a NIC's sockets and notification FIFOs."""
    return state_dir / "nics" / f"{host}-{nic}"


def guest_run_dir(state_dir: Path, guest: str) -> Path:
    """Directory of a guest's device sockets and FIFOs."""
    return state_dir / "guests" / guest


@dataclass(frozen=True)
class PortPolicy:
    """What the administrator allows a guest's port (enforced by the NIC and the vmxnet3 device)."""

    mac_change: bool = False
    #: Inclusive VLAN id ranges the guest may use; empty: no VLANs (untagged only).
    vlans: tuple[tuple[int, int], ...] = ((1, 4094),)
    antispoof: bool = True
    mtu_max: int = 9000


@dataclass(frozen=True)
class NicConfig:
    lab: str
    host: str
    name: str
    model: str  # a key of nic_emulators.models.MODELS
    vfs: int
    uplink: str  # interface in the host's namespace that is the NIC's wire port
    run_dir: str  # nic_run_dir(...)
    interrupt_vectors: int = 64  # the NIC's MSI-X pool shared by its VFs
    csr_port: int = 0  # FPGA models: TCP port of the CSR transport (0: pick one)
    powered: bool = True


@dataclass(frozen=True)
class VmxConfig:
    lab: str
    guest: str
    host: str
    mac: str
    run_dir: str  # guest_run_dir(...)
    #: Control socket of the NIC whose VFs this guest may use ("" when the host has none).
    nic_control: str = ""
    #: Datagram socket of that NIC's PF port (the emulation path forwards through it).
    nic_pf_port: str = ""
    #: Without a NIC PF port: the host interface the emulation path sends on (a plain
    #: vSwitch uplink), e.g. when the guest's VF NIC can lose power or link.
    uplink: str = ""
    #: "npa": passthrough when a VF is offered; "emulation": never asks for a VF.
    mode: str = "npa"
    mtu: int = 1500
    memory_reserved: bool = True
    policy: PortPolicy = field(default_factory=PortPolicy)
    #: "" for the device a guest starts with; a migration destination gets a tag of its
    #: own (its sockets, FIFOs and shared memory carry it) until it takes the guest over.
    instance: str = ""
    #: A migration destination: the address (``ip:port``, port 0 = any) it takes the
    #: migration stream on, on its host's management network.
    incoming: str = ""
    #: Failure injection for tests (LM-05): the destination refuses the final state.
    fail_incoming: bool = False


@dataclass(frozen=True)
class ShellConfig:
    lab: str
    guest: str
    tap: str  # the guest's netdev, a persistent TAP in the guest's namespace
    run_dir: str  # guest_run_dir(...): vmx.sock is there
    #: Guest memory: small (2 KiB) and large (64 KiB) buffers, all owned by the shell.
    small_buffers: int = 16384
    large_buffers: int = 16
    #: Without a TX completion for this long while frames are outstanding, the
    #: shell declares the plugin stuck (a netdev watchdog), a runtime error.
    tx_timeout_ms: int = 200


C = TypeVar("C")


def write_config(config: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(config), indent=1))
    return path


def read_config(cls: type[C], path: Path) -> C:
    data = json.loads(path.read_text())
    if cls is VmxConfig and "policy" in data:
        policy = data["policy"]
        policy["vlans"] = tuple(tuple(r) for r in policy.get("vlans", ()))
        data["policy"] = PortPolicy(**policy)
    return cls(**data)
