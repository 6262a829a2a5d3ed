"""The emulated backend: each host a network namespace with a real sshd, each switch a bridge.

Layout on the controller machine (root namespace)::

    <lab>-mg  bridge, controller address .1 ---- <lab>-m<h> veth ---- mgmt0 in npa-<lab>-<host>
    <lab>-s<k> bridge (lab switch k) ---------- <lab>-h<h>i<j> veth -- <interface> in the host

The guests of these hosts get the same treatment (a namespace ``npa-<lab>-<guest>``,
a management veth numbered after the hosts', their own sshd), so the controller
reaches a guest exactly as it reaches a host; their data NIC (a TAP) and the
processes behind it are ``bench.lab.data_path``'s job.

Everything is journalled in the lab state before it is created.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from ipaddress import IPv4Network
from pathlib import Path

from bench.errors import LabError
from bench.lab import naming
from bench.lab.backends.registry import register_backend
from bench.lab.processes import is_running, spawn_in_netns
from bench.lab.sshd import (
    check_sshd_config,
    generate_key,
    sshd_argv,
    wait_for_banner,
    write_sshd_config,
)
from bench.lab.state import LabState, Resource
from bench.lab.system import run_ip_batch, run_local
from bench.progress import Progress
from bench.ssh import SshEndpoint
from bench.topology import Guest, Host, Interface, Topology
from nic_emulators.config import guest_run_dir

SSH_PORT = 22


@dataclass(frozen=True)
class _Machine:
    """What the backend makes for a host or a guest: a namespace, a management veth, an sshd."""

    name: str
    #: Management index: the machine's management address and veth name.
    index: int
    #: Where its sshd's key, config and logs go.
    directory: Path
    #: Data interfaces cabled to lab switches (hosts only; a guest's NIC is a TAP).
    interfaces: tuple[Interface, ...] = ()


#: ethtool settings of every emulated data interface (see ``_build_network``).
WIRE_OFFLOADS = ("tx", "off", "tso", "off", "gso", "off")


@register_backend("emulated")
class EmulatedBackend:
    """Brings up the emulated hosts of a topology, and their guests, on this machine."""

    def __init__(
        self, topology: Topology, topology_path: Path, state: LabState, progress: Progress
    ) -> None:
        self.topology = topology
        self.state = state
        self.progress = progress
        self.lab = topology.lab.name

    def provision(self, hosts: Sequence[Host], deadline: float) -> dict[str, SshEndpoint]:
        """Create namespaces, bridges, links and sshds for ``hosts`` and their guests.

        Returns the SSH endpoint of each host and each guest.
        """
        if not hosts:
            return {}
        self._check_management_free()
        keys = self._client_keys()
        guests = self.guests_of(hosts)
        machines = self._machines(hosts, guests)
        self._build_network(machines)
        self.progress(
            f"{len(hosts)} host and {len(guests)} guest namespace(s), "
            f"{len(self.topology.switches)} switch(es) made"
        )
        endpoints = self._start_sshds(machines, keys, deadline)
        self.progress(f"sshd answering on {len(hosts)} host(s) and {len(guests)} guest(s)")
        return endpoints

    def guests_of(self, hosts: Sequence[Host]) -> list[Guest]:
        """The namespaced guests that run on ``hosts``, in topology order (a QEMU
        hypervisor's guests are VMs: ``bench.lab.qemu_guests`` makes those)."""
        names = {h.name for h in hosts if h.hypervisor == "emulated"}
        return [g for g in self.topology.guests if g.host in names]

    def _machines(self, hosts: Sequence[Host], guests: Sequence[Guest]) -> list[_Machine]:
        """Hosts first (index i), then guests (index after the hosts')."""
        state_dir = self.state.directory
        machines = [
            _Machine(h.name, i, state_dir / "hosts" / h.name, h.interfaces)
            for i, h in enumerate(hosts)
        ]
        machines += [
            _Machine(g.name, naming.guest_index(len(hosts), j), guest_run_dir(state_dir, g.name))
            for j, g in enumerate(guests)
        ]
        return machines

    # -- network ----------------------------------------------------------------

    def _check_management_free(self) -> None:
        """Refuse a management network that overlaps a route of this machine."""
        net = self.topology.lab.management
        routes = json.loads(run_local(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout)
        for route in routes:
            dst = route.get("dst", "")
            if dst in ("", "default") or route.get("type") in ("broadcast", "local"):
                continue
            try:
                other = IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
            except ValueError:
                continue
            if other.overlaps(net):
                raise LabError(
                    f"management network {net} of lab {self.lab!r} overlaps route {dst} "
                    f"on device {route.get('dev', '?')} of this machine; choose another "
                    "lab.management (another lab may be up: `npabench cleanup`)"
                )

    def _build_network(self, machines: Sequence[_Machine]) -> None:
        lab, alias = self.lab, naming.link_alias(self.lab)
        switch_index = {s.name: k for k, s in enumerate(self.topology.switches)}
        bridges = [naming.management_bridge(lab)]
        bridges += [naming.switch_bridge(lab, k) for k in range(len(self.topology.switches))]
        namespaces = [naming.netns_name(lab, m.name) for m in machines]
        self.state.record(
            *(Resource("netns", ns) for ns in namespaces),
            *(Resource("link", br) for br in bridges),
        )

        root: list[str] = [f"netns add {ns}" for ns in namespaces]
        for br in bridges:
            root += [f"link add {br} type bridge", f"link set {br} alias {alias}"]
        mgmt = self.topology.lab.management
        ctrl = naming.controller_address(mgmt)
        root.append(f"addr add {ctrl}/{mgmt.prefixlen} dev {bridges[0]}")
        root += [f"link set {br} up" for br in bridges]
        for ns, machine in zip(namespaces, machines, strict=True):
            veth = naming.management_veth(lab, machine.index)
            root += [
                f"link add {veth} type veth peer name {naming.MANAGEMENT_INTERFACE} netns {ns}",
                f"link set {veth} alias {alias}",
                f"link set {veth} master {bridges[0]} up",
            ]
            for i, iface in enumerate(machine.interfaces):
                veth = naming.data_veth(lab, machine.index, i)
                bridge = naming.switch_bridge(lab, switch_index[iface.switch])
                root += [
                    f"link add {veth} type veth peer name {iface.name} netns {ns}",
                    f"link set {veth} alias {alias}",
                    f"link set {veth} master {bridge} up",
                ]
        run_ip_batch(root)

        for ns, machine in zip(namespaces, machines, strict=True):
            inner = [
                "link set lo up",
                f"addr add {naming.host_address(mgmt, machine.index)}/{mgmt.prefixlen} "
                f"dev {naming.MANAGEMENT_INTERFACE}",
                f"link set {naming.MANAGEMENT_INTERFACE} up",
            ]
            for iface in machine.interfaces:
                if iface.mac:
                    inner.append(f"link set {iface.name} address {iface.mac}")
                if iface.address:
                    inner.append(f"addr add {iface.address} dev {iface.name}")
                inner.append(f"link set {iface.name} up")
            run_ip_batch(inner, netns=ns)
            # A host with two links on one switch (a NIC board's fibre beside its main
            # uplink) must answer ARP only on the interface that owns the address.
            run_local(
                ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"]
            )
            # A veth stands for a NIC and its cable: what goes on the wire is segmented and
            # checksummed, as a NIC's TSO and checksum offload leave it. Left on, the veth
            # hands 64 KiB unchecksummed TCP frames to whatever reads the wire (a NIC
            # emulator), which a real wire never carries.
            for iface in machine.interfaces:
                run_local(["ip", "netns", "exec", ns, "ethtool", "-K", iface.name, *WIRE_OFFLOADS])

    # -- ssh ---------------------------------------------------------------------

    def _client_keys(self) -> Path:
        keys = self.state.directory / "keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        client = keys / "id_ed25519"
        if not client.exists():
            public = generate_key(client, f"npabench-{self.lab}")
            (keys / "authorized_keys").write_text(public + "\n")
        return keys

    def _start_sshds(
        self, machines: Sequence[_Machine], keys: Path, deadline: float
    ) -> dict[str, SshEndpoint]:
        mgmt = self.topology.lab.management
        known_hosts: list[str] = []
        started: list[tuple[str, str, Path, Resource]] = []
        for n, machine in enumerate(machines):
            directory = machine.directory
            directory.mkdir(parents=True, exist_ok=True)
            address = str(naming.host_address(mgmt, machine.index))
            public = generate_key(directory / "ssh_host_ed25519_key", f"{machine.name}@{self.lab}")
            known_hosts.append(f"{address} {' '.join(public.split()[:2])}")
            config = write_sshd_config(directory, address, SSH_PORT, keys / "authorized_keys")
            if n == 0:
                check_sshd_config(config)
            log = directory / "sshd.log"
            process = spawn_in_netns(
                naming.netns_name(self.lab, machine.name),
                sshd_argv(config, log),
                f"sshd {machine.name}",
                directory / "sshd.stdout",
            )
            self.state.record(process)
            started.append((machine.name, address, log, process))
        (keys / "known_hosts").write_text("\n".join(known_hosts) + "\n")
        for name, address, log, process in started:
            wait_for_banner(
                name,
                address,
                SSH_PORT,
                deadline=deadline,
                log=log,
                alive=partial(is_running, process),
            )
        return {
            name: SshEndpoint(
                host=name,
                address=address,
                port=SSH_PORT,
                user="root",
                key_file=keys / "id_ed25519",
                known_hosts=keys / "known_hosts",
            )
            for name, address, _, _ in started
        }
