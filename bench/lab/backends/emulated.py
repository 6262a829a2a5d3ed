"""The emulated backend: each host a network namespace with a real sshd, each switch a bridge.

Layout on the controller machine (root namespace)::

    <lab>-mg  bridge, controller address .1 ---- <lab>-m<h> veth ---- mgmt0 in npa-<lab>-<host>
    <lab>-s<k> bridge (lab switch k) ---------- <lab>-h<h>i<j> veth -- <interface> in the host

Everything is journalled in the lab state before it is created.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
from bench.topology import Host, Topology

SSH_PORT = 22


@register_backend("emulated")
class EmulatedBackend:
    """Brings up the emulated hosts of a topology on this machine."""

    def __init__(
        self, topology: Topology, topology_path: Path, state: LabState, progress: Progress
    ) -> None:
        self.topology = topology
        self.state = state
        self.progress = progress
        self.lab = topology.lab.name

    def provision(self, hosts: Sequence[Host], deadline: float) -> dict[str, SshEndpoint]:
        """Create namespaces, bridges, links and sshds; return each host's SSH endpoint."""
        if not hosts:
            return {}
        self._check_management_free()
        keys = self._client_keys()
        self._build_network(hosts)
        self.progress(f"{len(hosts)} namespaces and {len(self.topology.switches)} switch(es) made")
        endpoints = self._start_sshds(hosts, keys, deadline)
        self.progress(f"sshd answering on {len(endpoints)} host(s)")
        return endpoints

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

    def _build_network(self, hosts: Sequence[Host]) -> None:
        lab, alias = self.lab, naming.link_alias(self.lab)
        switch_index = {s.name: k for k, s in enumerate(self.topology.switches)}
        bridges = [naming.management_bridge(lab)]
        bridges += [naming.switch_bridge(lab, k) for k in range(len(self.topology.switches))]
        namespaces = [naming.netns_name(lab, h.name) for h in hosts]
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
        for h, host in enumerate(hosts):
            ns = namespaces[h]
            veth = naming.management_veth(lab, h)
            root += [
                f"link add {veth} type veth peer name {naming.MANAGEMENT_INTERFACE} netns {ns}",
                f"link set {veth} alias {alias}",
                f"link set {veth} master {bridges[0]} up",
            ]
            for i, iface in enumerate(host.interfaces):
                veth = naming.data_veth(lab, h, i)
                bridge = naming.switch_bridge(lab, switch_index[iface.switch])
                root += [
                    f"link add {veth} type veth peer name {iface.name} netns {ns}",
                    f"link set {veth} alias {alias}",
                    f"link set {veth} master {bridge} up",
                ]
        run_ip_batch(root)

        for h, host in enumerate(hosts):
            inner = [
                "link set lo up",
                f"addr add {naming.host_address(mgmt, h)}/{mgmt.prefixlen} "
                f"dev {naming.MANAGEMENT_INTERFACE}",
                f"link set {naming.MANAGEMENT_INTERFACE} up",
            ]
            for iface in host.interfaces:
                if iface.mac:
                    inner.append(f"link set {iface.name} address {iface.mac}")
                if iface.address:
                    inner.append(f"addr add {iface.address} dev {iface.name}")
                inner.append(f"link set {iface.name} up")
            run_ip_batch(inner, netns=namespaces[h])

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
        self, hosts: Sequence[Host], keys: Path, deadline: float
    ) -> dict[str, SshEndpoint]:
        mgmt = self.topology.lab.management
        known_hosts: list[str] = []
        started: list[tuple[str, str, Path, Resource]] = []
        for h, host in enumerate(hosts):
            directory = self.state.directory / "hosts" / host.name
            directory.mkdir(parents=True, exist_ok=True)
            address = str(naming.host_address(mgmt, h))
            public = generate_key(directory / "ssh_host_ed25519_key", f"{host.name}@{self.lab}")
            known_hosts.append(f"{address} {' '.join(public.split()[:2])}")
            config = write_sshd_config(directory, address, SSH_PORT, keys / "authorized_keys")
            if h == 0:
                check_sshd_config(config)
            log = directory / "sshd.log"
            process = spawn_in_netns(
                naming.netns_name(self.lab, host.name),
                sshd_argv(config, log),
                f"sshd {host.name}",
                directory / "sshd.stdout",
            )
            self.state.record(process)
            started.append((host.name, address, log, process))
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
