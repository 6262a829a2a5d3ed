"""Rules that relate parts of a topology to each other.

Each rule reports the exact field that breaks it, so the error points at the
line a reader must change: the second of two duplicate names, the dangling
reference, the address outside its subnet.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Protocol, cast

from bench.topology.issues import TopologyIssue
from bench.topology.model import QEMU_PRIMARY_MODELS, Guest, Host, Topology
from bench.topology.source import FieldPath, SourceDocument
from nic_emulators.models import MODEL_NAMES

#: Offset of the first emulated host in the management network; the addresses
#: below it are the bench's (.1 is the controller). ``bench.lab.naming`` places
#: emulated host i at this offset + i, and the guests of emulated hosts after them.
MANAGEMENT_FIRST_HOST = 10

#: Name of the management interface the emulated backend puts in every host.
MANAGEMENT_INTERFACE = "mgmt0"

#: Interface names the emulated backend makes in every host itself, and what for;
#: a topology may not give them to an interface of an emulated host.
RESERVED_INTERFACE_NAMES: Mapping[str, str] = {
    "lo": "the loopback interface",
    MANAGEMENT_INTERFACE: "the bench's management interface",
}


def check_topology(topo: Topology, doc: SourceDocument) -> list[TopologyIssue]:
    """Every cross-field fault of ``topo``, as issues located in ``doc``."""
    return [doc.issue(path, message) for path, message in _faults(topo, doc)]


def _faults(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    yield from _unique_names(topo, doc)
    yield from _host_rules(topo)
    yield from _references(topo)
    yield from _guest_rules(topo)
    yield from _unique_macs(topo, doc)
    yield from _networks(topo, doc)
    yield from _addresses(topo, doc)
    yield from _instrument_wiring(topo)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def _line(doc: SourceDocument, path: FieldPath) -> int:
    return doc.position_of(path).line


def _order(doc: SourceDocument, path: FieldPath) -> tuple[int, int]:
    position = doc.position_of(path)
    return position.line, position.column


def _unique_names(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    # One name space for everything a user names on the command line; the
    # later of two uses in the file is the one reported.
    named: list[tuple[str, str, FieldPath]] = [
        (item.name, kind, (key, i, "name"))
        for kind, key, items in (
            ("host", "hosts", topo.hosts),
            ("switch", "switches", topo.switches),
            ("instrument", "instruments", topo.instruments),
            ("guest", "guests", topo.guests),
        )
        for i, item in enumerate(cast("Sequence[_Named]", items))
    ]
    named.sort(key=lambda entry: _order(doc, entry[2]))
    seen: dict[str, tuple[str, FieldPath]] = {}
    for name, kind, path in named:
        if name in seen:
            first_kind, first_path = seen[name]
            yield (
                path,
                f"duplicate name {name!r}: expected a name unique in the lab, got one "
                f"already used by a {first_kind} at line {_line(doc, first_path)}",
            )
        else:
            seen[name] = (kind, path)
    for h, host in enumerate(topo.hosts):
        parts: tuple[tuple[str, Sequence[_Named]], ...] = (
            ("interfaces", host.interfaces),
            ("nics", host.nics),
        )
        for key, children in parts:
            first: dict[str, FieldPath] = {}
            for j, child in enumerate(children):
                path = ("hosts", h, key, j, "name")
                if child.name in first:
                    yield (
                        path,
                        f"duplicate name {child.name!r} in {key} of host {host.name!r} "
                        f"(first used at line {_line(doc, first[child.name])})",
                    )
                else:
                    first[child.name] = path


def _models(host: Host) -> tuple[str, ...]:
    """The NIC models a host may name: QEMU's primaries on a QEMU hypervisor, else emulators."""
    return QEMU_PRIMARY_MODELS if host.hypervisor == "qemu" else MODEL_NAMES


def _real_nic_rules(h: int, host: Host) -> Iterator[tuple[FieldPath, str]]:
    """``qemu:`` and ``vf_config:`` belong to lab hosts; a VF setting names an existing VF."""
    if host.qemu is not None and host.backend != "lab":
        yield (
            ("hosts", h, "qemu"),
            f"host {host.name!r} has backend {host.backend!r}: expected 'qemu:' only on a "
            "'backend: lab' host (one the bench boots and then reaches over SSH)",
        )
    for n, nic in enumerate(host.nics):
        for v, spec in enumerate(nic.vf_config):
            path: FieldPath = ("hosts", h, "nics", n, "vf_config", v)
            if host.backend != "lab":
                yield (path, "VF settings are for real NICs: expected 'vf_config:' on lab hosts")
            elif spec.vf >= nic.vfs:
                yield (
                    (*path, "vf"),
                    f"expected a VF index below vfs: {nic.vfs} of NIC {nic.name!r}, got {spec.vf}",
                )


def _host_rules(topo: Topology) -> Iterator[tuple[FieldPath, str]]:
    for h, host in enumerate(topo.hosts):
        if host.backend == "lab" and host.ssh is None:
            yield (
                ("hosts", h),
                f"host {host.name!r} has backend 'lab': expected an 'ssh:' section "
                "(address, key, known_hosts), got none",
            )
        if host.backend == "emulated" and host.ssh is not None:
            yield (
                ("hosts", h, "ssh"),
                f"host {host.name!r} has backend 'emulated', which gets its SSH endpoint "
                "from the bench: expected no 'ssh:' (or set 'backend: lab')",
            )
        yield from _real_nic_rules(h, host)
        for i, iface in enumerate(host.interfaces):
            reserved = RESERVED_INTERFACE_NAMES.get(iface.name)
            if host.backend == "emulated" and reserved is not None:
                yield (
                    ("hosts", h, "interfaces", i, "name"),
                    f"interface name {iface.name!r} is reserved by the emulated backend for "
                    f"{reserved}: expected another name for this interface of host "
                    f"{host.name!r}",
                )
        for n, nic in enumerate(host.nics):
            path: FieldPath = ("hosts", h, "nics", n)
            if (nic.model is None) == (nic.pci is None):
                both = "both" if nic.model is not None else "neither"
                yield (
                    path,
                    "expected exactly one of 'model' (emulated NIC) or 'pci' (real device), "
                    f"got {both}",
                )
            elif host.backend == "emulated" and nic.pci is not None:
                yield (
                    (*path, "pci"),
                    "an emulated host has no PCI devices: expected 'model:', got 'pci:'",
                )
            elif host.backend == "lab" and nic.model is not None:
                yield (
                    (*path, "model"),
                    "a lab host drives real NICs: expected the PF's 'pci:' address, got 'model:'",
                )
            elif nic.model is not None and nic.model not in _models(host):
                models = _models(host)
                close = difflib.get_close_matches(nic.model, models, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                what = (
                    "QEMU primary NIC models (a QEMU hypervisor's 'VF')"
                    if host.hypervisor == "qemu"
                    else "emulated NIC models"
                )
                yield (
                    (*path, "model"),
                    f"expected one of the {what} {', '.join(models)}, got {nic.model!r}{hint}",
                )
            elif nic.model is not None and nic.link is None:
                yield (
                    path,
                    f"an emulated NIC needs an uplink: expected 'link:' naming an interface of "
                    f"host {host.name!r}, which has none",
                )


def _unknown(what: str, name: str, names: Iterable[str], where: str = "the lab") -> str:
    listed = ", ".join(sorted(names))
    expected = f"expected one of {listed}" if listed else f"{where} defines none"
    return f"no {what} named {name!r} in {where}: {expected}"


def _references(topo: Topology) -> Iterator[tuple[FieldPath, str]]:
    switches = {s.name for s in topo.switches}
    hosts: dict[str, Host] = {}
    for host in topo.hosts:
        hosts.setdefault(host.name, host)  # a duplicate name is reported once, elsewhere
    for h, host in enumerate(topo.hosts):
        for i, iface in enumerate(host.interfaces):
            if iface.switch not in switches:
                yield (
                    ("hosts", h, "interfaces", i, "switch"),
                    _unknown("switch", iface.switch, switches),
                )
        ifnames = {iface.name for iface in host.interfaces}
        uplinks: dict[str, str] = {}
        for n, nic in enumerate(host.nics):
            if nic.link is not None and nic.link not in ifnames:
                yield (
                    ("hosts", h, "nics", n, "link"),
                    _unknown("interface", nic.link, ifnames, f"host {host.name!r}"),
                )
            elif nic.link is not None and nic.link in uplinks and host.backend == "emulated":
                # Two emulated NICs on one veth would both own its wire.
                yield (
                    ("hosts", h, "nics", n, "link"),
                    f"interface {nic.link!r} is already the uplink of NIC "
                    f"{uplinks[nic.link]!r}: expected one NIC per interface of host "
                    f"{host.name!r}",
                )
            elif nic.link is not None:
                uplinks[nic.link] = nic.name
    for g, guest in enumerate(topo.guests):
        if guest.host not in hosts:
            yield ("guests", g, "host"), _unknown("host", guest.host, hosts)
        elif hosts[guest.host].role != "hypervisor":
            yield (
                ("guests", g, "host"),
                "expected a host with role 'hypervisor' to run the guest, "
                f"got {guest.host!r} with role {hosts[guest.host].role!r}",
            )
        if guest.switch is not None and guest.switch not in switches:
            yield ("guests", g, "switch"), _unknown("switch", guest.switch, switches)


def _guest_rules(topo: Topology) -> Iterator[tuple[FieldPath, str]]:
    """A guest's NIC, mode, switch and MTU agree with its host and policy."""
    hosts: dict[str, Host] = {}
    for host in topo.hosts:
        hosts.setdefault(host.name, host)
    for g, guest in enumerate(topo.guests):
        on = hosts.get(guest.host)
        if on is not None:
            yield from _guest_on_host(topo, g, guest, on)
        if guest.mtu > guest.policy.mtu_max:
            yield (
                ("guests", g, "mtu"),
                f"expected an MTU of at most the policy's mtu_max {guest.policy.mtu_max}, "
                f"got {guest.mtu}",
            )


def _guest_on_host(
    topo: Topology, g: int, guest: Guest, host: Host
) -> Iterator[tuple[FieldPath, str]]:
    if guest.nic is not None and host.nic(guest.nic) is None:
        yield (
            ("guests", g, "nic"),
            _unknown("NIC", guest.nic, (n.name for n in host.nics), f"host {host.name!r}"),
        )
    if guest.nic_mode == "failover" and host.backend == "emulated" and host.hypervisor != "qemu":
        yield (
            ("guests", g, "nic_mode"),
            "failover guests (virtio standby + VF primary under net_failover) need a QEMU "
            f"hypervisor; host {host.name!r} has the emulated one: expected nic_mode 'npa' or "
            "'emulation', got 'failover' (or 'hypervisor: qemu' on the host)",
        )
    if guest.nic_mode == "npa" and host.hypervisor == "qemu":
        yield (
            ("guests", g, "nic_mode"),
            f"host {host.name!r} runs its guests under QEMU, which has no NPA shell: expected "
            "nic_mode 'failover' or 'emulation', got 'npa'",
        )
    if guest.vswitch_uplink is not None and guest.vswitch_uplink not in {
        i.name for i in host.interfaces
    }:
        yield (
            ("guests", g, "vswitch_uplink"),
            _unknown(
                "interface",
                guest.vswitch_uplink,
                (i.name for i in host.interfaces),
                f"host {host.name!r}",
            ),
        )
    nic = topo.guest_nic(guest)
    if guest.switch is None or nic is None or nic.link is None:
        return
    cabled = next((i.switch for i in host.interfaces if i.name == nic.link), None)
    if cabled is not None and cabled != guest.switch:
        yield (
            ("guests", g, "switch"),
            f"the guest's NIC {nic.name!r} has its uplink {nic.link!r} on switch {cabled!r}: "
            f"expected switch {cabled!r} (or no 'switch:'), got {guest.switch!r}",
        )


def _unique_macs(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    seen: dict[str, FieldPath] = {}
    candidates: list[tuple[str | None, FieldPath]] = [
        (iface.mac, ("hosts", h, "interfaces", i, "mac"))
        for h, host in enumerate(topo.hosts)
        for i, iface in enumerate(host.interfaces)
    ]
    candidates += [(guest.mac, ("guests", g, "mac")) for g, guest in enumerate(topo.guests)]
    candidates.sort(key=lambda entry: _order(doc, entry[1]))
    for mac, path in candidates:
        if mac is None:
            continue
        if mac in seen:
            yield (
                path,
                f"duplicate MAC {mac}: expected a MAC unique in the lab, got one "
                f"already used at line {_line(doc, seen[mac])}",
            )
        else:
            seen[mac] = path


def _networks(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    # The management network is the bench's own only when it makes emulated hosts.
    emulated = sum(1 for h in topo.hosts if h.backend == "emulated")
    guests = len(topo.emulated_guests())
    networks: list[tuple[IPv4Network, FieldPath]] = (
        [(topo.lab.management, ("lab", "management"))] if emulated else []
    )
    networks += [
        (s.subnet, ("switches", i, "subnet"))
        for i, s in enumerate(topo.switches)
        if s.subnet is not None
    ]
    networks.sort(key=lambda entry: _order(doc, entry[1]))
    for i, (net, path) in enumerate(networks):
        for other, other_path in networks[:i]:
            if net.overlaps(other):
                yield (
                    path,
                    f"subnet {net} overlaps {other} (line {_line(doc, other_path)}): "
                    "expected lab networks that do not overlap",
                )
                break
    room = max(topo.lab.management.num_addresses - MANAGEMENT_FIRST_HOST - 1, 0)
    if emulated + guests > room:
        with_guests = f" and their {guests} guests" if guests else ""
        yield (
            ("lab", "management"),
            f"expected a management network with room for the {emulated} emulated hosts"
            f"{with_guests}, got {topo.lab.management} with room for {room}; "
            "use a larger prefix",
        )


def _addresses(topo: Topology, doc: SourceDocument) -> Iterator[tuple[FieldPath, str]]:
    subnets = {s.name: s.subnet for s in topo.switches}
    has_emulated = any(h.backend == "emulated" for h in topo.hosts)
    mgmt = topo.lab.management if has_emulated else None
    placed: list[tuple[IPv4Interface, str | None, FieldPath]] = [
        (iface.address, iface.switch, ("hosts", h, "interfaces", i, "address"))
        for h, host in enumerate(topo.hosts)
        for i, iface in enumerate(host.interfaces)
        if iface.address is not None
    ]
    placed += [
        (g.address, topo.guest_switch(g), ("guests", n, "address"))
        for n, g in enumerate(topo.guests)
    ]
    placed.sort(key=lambda entry: _order(doc, entry[2]))
    used: dict[IPv4Address, FieldPath] = {}
    for address, switch, path in placed:
        if address.ip in used:
            yield (
                path,
                f"address {address.ip} is already used at line {_line(doc, used[address.ip])}: "
                "expected an address unique in the lab",
            )
        else:
            used[address.ip] = path
        subnet = subnets.get(switch) if switch else None
        fault = _address_fault(address, switch, subnet, mgmt)
        if fault:
            yield path, fault


def _address_fault(
    address: IPv4Interface,
    switch: str | None,
    subnet: IPv4Network | None,
    mgmt: IPv4Network | None,
) -> str | None:
    """The one thing wrong with a data address, if anything (one fault, one issue)."""
    ip, net = address.ip, address.network
    if subnet is not None and ip not in subnet:
        return f"expected an address in subnet {subnet} of switch {switch!r}, got {ip}"
    if subnet is not None and address.network.prefixlen != subnet.prefixlen:
        return (
            f"expected prefix length /{subnet.prefixlen} of switch {switch!r} ({subnet}), "
            f"got {address}"
        )
    if net.prefixlen <= 30 and ip in (net.network_address, net.broadcast_address):
        which = "network" if ip == net.network_address else "broadcast"
        return f"expected a host address of {net}, got its {which} address {ip}"
    if subnet is None and mgmt is not None and ip in mgmt:
        # With a subnet, the subnet's overlap with management is the one fault.
        return f"expected an address outside the management network {mgmt}, got {ip}"
    return None


def _instrument_wiring(topo: Topology) -> Iterator[tuple[FieldPath, str]]:
    """Each wire: a channel the instrument has, used once, to a NIC or link that exists."""
    hosts = {h.name: h for h in topo.hosts}
    for i, instrument in enumerate(topo.instruments):
        used: set[int] = set()
        for w, wire in enumerate(instrument.wiring):
            path: FieldPath = ("instruments", i, "wiring", w)
            if wire.channel > instrument.channels:
                yield (
                    (*path, "channel"),
                    f"expected a channel of {instrument.name} (1..{instrument.channels}), "
                    f"got {wire.channel}",
                )
            elif wire.channel in used:
                yield (*path, "channel"), f"channel {wire.channel} is wired twice"
            used.add(wire.channel)
            host_name, part = wire.to.split("/", 1)
            host = hosts.get(host_name)
            if host is None:
                known = ", ".join(sorted(hosts))
                yield (*path, "to"), f"no host named {host_name!r} (hosts: {known})"
                continue
            if instrument.kind == "power-supply":
                names = {n.name for n in host.nics}
                what = "NIC"
            else:
                names = {iface.name for iface in host.interfaces}
                what = "interface"
            if part not in names:
                known = ", ".join(sorted(names)) or "none"
                yield (
                    (*path, "to"),
                    f"expected a {what} of host {host_name} ({known}), got {part!r}",
                )
