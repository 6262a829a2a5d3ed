"""The hypervisor interface and its backends (``emulated`` now; QEMU, ESXi later)."""

from bench.hypervisor.interface import Hypervisor, HypervisorEvent, MigrationResult
from bench.hypervisor.registry import hypervisor_for, register

__all__ = ["Hypervisor", "HypervisorEvent", "MigrationResult", "hypervisor_for", "register"]
