"""Where a guest's device lands on a host: the NIC it takes VFs from there.

The same rule at ``npabench up`` (``Topology.guest_nic``) and after a
migration: the guest's own ``nic:`` if the host has one of that name with
VFs, else the host's first NIC with VFs, else its first NIC (whose PF port
still carries the emulated path), else none (the host's vSwitch uplink).
"""

from __future__ import annotations

from bench.errors import UsageError
from bench.topology import Nic, Topology


def nic_at(topology: Topology, guest: str, host: str) -> Nic | None:
    spec = topology.guest(guest)
    machine = topology.host(host)
    own = machine.nic(spec.nic) if spec.nic else None
    if own is not None and own.vfs > 0:
        return own
    return next((n for n in machine.nics if n.vfs > 0), machine.nics[0] if machine.nics else None)


def check_destination(topology: Topology, guest: str, source: str, destination: str) -> None:
    """Refuse a destination that cannot carry ``guest`` (UsageError saying why)."""
    spec = topology.guest(guest)
    try:
        host = topology.host(destination)
    except KeyError:
        known = ", ".join(h.name for h in topology.hosts if h.role == "hypervisor")
        raise UsageError(
            f"cannot migrate {guest}: no host {destination!r} (hypervisors: {known})"
        ) from None
    if destination == source:
        raise UsageError(f"cannot migrate {guest}: it already runs on {destination}")
    if host.role != "hypervisor":
        raise UsageError(
            f"cannot migrate {guest} to {destination}: it is a {host.role}, not a hypervisor"
        )
    switch = topology.guest_switch(spec)
    if switch is not None and not any(i.switch == switch for i in host.interfaces):
        raise UsageError(
            f"cannot migrate {guest} to {destination}: it has no interface on switch "
            f"{switch}, the guest's network"
        )
