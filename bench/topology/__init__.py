"""Topology files: the schema, the loader and the cross-checks."""

from bench.topology.issues import Position, TopologyError, TopologyIssue
from bench.topology.loader import load_topology, load_topology_with_source
from bench.topology.model import (
    Guest,
    GuestPolicy,
    Host,
    Instrument,
    Interface,
    LabSpec,
    Limits,
    Nic,
    QemuHost,
    SshAccess,
    Switch,
    Topology,
    VfSpec,
)

__all__ = [
    "Guest",
    "GuestPolicy",
    "Host",
    "Instrument",
    "Interface",
    "LabSpec",
    "Limits",
    "Nic",
    "Position",
    "QemuHost",
    "SshAccess",
    "Switch",
    "Topology",
    "TopologyError",
    "TopologyIssue",
    "VfSpec",
    "load_topology",
    "load_topology_with_source",
]
