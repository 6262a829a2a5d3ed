"""Rules that relate parts of a topology to each other.

Each rule reports the exact field that breaks it, so the error points at the
line a reader must change: the second of two duplicate names, the dangling
reference, the address outside its subnet.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol

from bench.topology.issues import TopologyIssue
from bench.topology.model import Topology
from bench.topology.source import FieldPath, SourceDocument

#: Addresses of the management network the bench keeps for itself: the
#: network address, the controller's bridge address (.1), and broadcast.
MANAGEMENT_RESERVED = 2


def check_topology(topo: Topology, doc: SourceDocument) -> list[TopologyIssue]:
    """Every cross-field fault of ``topo``, as issues located in ``doc``."""
    return [doc.issue(path, message) for path, message in _faults(topo, doc)]


def _faults(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    yield from _unique_names(topo, doc)
    yield from _host_rules(topo)
    yield from _references(topo)
    yield from _unique_macs(topo, doc)
    yield from _addresses(topo, doc)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _line(doc: SourceDocument, path: FieldPath) -> int:
    return doc.position_of(path).line


def _unique_names(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    # One name space for everything a user names on the command line.
    seen: dict[str, tuple[str, FieldPath]] = {}
    sections: tuple[tuple[str, str, Sequence[_Named]], ...] = (
        ("host", "hosts", topo.hosts),
        ("switch", "switches", topo.switches),
        ("instrument", "instruments", topo.instruments),
        ("guest", "guests", topo.guests),
    )
    for kind, key, items in sections:
        for i, item in enumerate(items):
            path: FieldPath = (key, i, "name")
            if item.name in seen:
                first_kind, first_path = seen[item.name]
                yield (
                    path,
                    (
                        f"duplicate name {item.name!r}: already used by a {first_kind} "
                        f"at line {_line(doc, first_path)}; names must be unique in a lab"
                    ),
                )
            else:
                seen[item.name] = (kind, path)
    for h, host in enumerate(topo.hosts):
        parts: tuple[tuple[str, Sequence[_Named]], ...] = (
            ("interfaces", host.interfaces),
            ("nics", host.nics),
        )
        for key, children in parts:
            names: set[str] = set()
            for j, child in enumerate(children):
                if child.name in names:
                    yield (
                        ("hosts", h, key, j, "name"),
                        f"duplicate name {child.name!r} in {key} of host {host.name!r}",
                    )
                names.add(child.name)


def _host_rules(topo: Topology) -> Iterator[tuple[FieldPath, str]]:
    for h, host in enumerate(topo.hosts):
        if host.backend == "lab" and host.ssh is None:
            yield ("hosts", h), f"host {host.name!r} has backend 'lab' and needs an 'ssh:' section"
        if host.backend == "emulated" and host.ssh is not None:
            yield (
                ("hosts", h, "ssh"),
                "an emulated host gets its SSH endpoint from the bench; remove 'ssh:'",
            )
        for n, nic in enumerate(host.nics):
            path: FieldPath = ("hosts", h, "nics", n)
            if (nic.model is None) == (nic.pci is None):
                yield path, "a NIC needs exactly one of 'model' (emulated) or 'pci' (real device)"
            elif host.backend == "emulated" and nic.pci is not None:
                yield (*path, "pci"), "an emulated host has no PCI devices; use 'model:'"
            elif host.backend == "lab" and nic.model is not None:
                yield (*path, "model"), "a lab host drives real NICs; give the PF's 'pci:' address"


def _references(topo: Topology) -> Iterator[tuple[FieldPath, str]]:
    switches = {s.name for s in topo.switches}
    hosts = {h.name: h for h in topo.hosts}

    def known(names: Iterable[str]) -> str:
        return ", ".join(sorted(names)) or "none defined"

    for h, host in enumerate(topo.hosts):
        for i, iface in enumerate(host.interfaces):
            if iface.switch not in switches:
                yield (
                    ("hosts", h, "interfaces", i, "switch"),
                    f"no switch named {iface.switch!r} (switches: {known(switches)})",
                )
        ifnames = {iface.name for iface in host.interfaces}
        for n, nic in enumerate(host.nics):
            if nic.link is not None and nic.link not in ifnames:
                yield (
                    ("hosts", h, "nics", n, "link"),
                    f"host {host.name!r} has no interface {nic.link!r} "
                    f"(interfaces: {known(ifnames)})",
                )
    for g, guest in enumerate(topo.guests):
        if guest.host not in hosts:
            yield ("guests", g, "host"), f"no host named {guest.host!r} (hosts: {known(hosts)})"
        elif hosts[guest.host].role != "hypervisor":
            yield (
                ("guests", g, "host"),
                f"host {guest.host!r} has role {hosts[guest.host].role!r}; "
                "a guest runs on a host with role 'hypervisor'",
            )
        if guest.switch is not None and guest.switch not in switches:
            yield (
                ("guests", g, "switch"),
                f"no switch named {guest.switch!r} (switches: {known(switches)})",
            )


def _unique_macs(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    seen: dict[str, FieldPath] = {}
    candidates: list[tuple[str | None, FieldPath]] = [
        (iface.mac, ("hosts", h, "interfaces", i, "mac"))
        for h, host in enumerate(topo.hosts)
        for i, iface in enumerate(host.interfaces)
    ]
    candidates += [(guest.mac, ("guests", g, "mac")) for g, guest in enumerate(topo.guests)]
    for mac, path in candidates:
        if mac is None:
            continue
        if mac in seen:
            yield path, f"duplicate MAC {mac} (also at line {_line(doc, seen[mac])})"
        else:
            seen[mac] = path


def _addresses(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    networks: list[tuple[IPv4Network, FieldPath]] = [(topo.lab.management, ("lab", "management"))]
    networks += [
        (s.subnet, ("switches", i, "subnet"))
        for i, s in enumerate(topo.switches)
        if s.subnet is not None
    ]
    for i, (net, path) in enumerate(networks):
        for other, other_path in networks[:i]:
            if net.overlaps(other):
                yield (
                    path,
                    (
                        f"subnet {net} overlaps {other} at line {_line(doc, other_path)}; "
                        "lab networks must not overlap"
                    ),
                )
    emulated = sum(1 for h in topo.hosts if h.backend == "emulated")
    room = topo.lab.management.num_addresses - MANAGEMENT_RESERVED - 8
    if emulated > room:
        yield (
            ("lab", "management"),
            f"{topo.lab.management} has room for {max(room, 0)} emulated hosts, "
            f"the topology has {emulated}; use a larger prefix",
        )

    subnets = {s.name: s.subnet for s in topo.switches}
    used: dict[IPv4Address, FieldPath] = {}
    placed: list[tuple[IPv4Address, str | None, FieldPath]] = [
        (iface.address.ip, iface.switch, ("hosts", h, "interfaces", i, "address"))
        for h, host in enumerate(topo.hosts)
        for i, iface in enumerate(host.interfaces)
        if iface.address is not None
    ]
    placed += [
        (g.address.ip, g.switch, ("guests", n, "address")) for n, g in enumerate(topo.guests)
    ]
    for ip, switch, path in placed:
        if ip in used:
            yield path, f"address {ip} is already used at line {_line(doc, used[ip])}"
        used[ip] = path
        subnet = subnets.get(switch) if switch else None
        if subnet is not None and ip not in subnet:
            yield path, f"address {ip} is outside subnet {subnet} of switch {switch!r}"
        if ip in topo.lab.management:
            yield path, f"address {ip} is inside the management network {topo.lab.management}"
