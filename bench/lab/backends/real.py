"""The ``lab`` backend: real servers that already run sshd; the bench only reaches them.

Nothing is created on such a host here (PF/VF set-up comes with the real-NIC
support); bringing the lab "up" means proving every host answers over SSH
with its pinned host key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.errors import UsageError
from bench.lab.backends.registry import register_backend
from bench.lab.state import LabState
from bench.progress import Progress
from bench.ssh import SshEndpoint, SshHost, connect_all
from bench.topology import Host, Topology, TopologyError, load_topology_with_source


@register_backend("lab")
class RealHostBackend:
    """Reaches real lab hosts with the key and known_hosts the topology names."""

    def __init__(
        self, topology: Topology, topology_path: Path, state: LabState, progress: Progress
    ) -> None:
        self.topology = topology
        self.topology_path = topology_path
        self.base = topology_path.resolve().parent
        self.progress = progress

    def endpoints(self, hosts: Sequence[Host]) -> dict[str, SshEndpoint]:
        """SSH endpoints of ``hosts``, with paths resolved against the topology file."""
        result: dict[str, SshEndpoint] = {}
        missing: list[tuple[int, str, Path]] = []
        for host in hosts:
            if host.ssh is None:  # the loader refuses this; keep mypy and readers sure
                raise UsageError(f"host {host.name}: a lab host needs an 'ssh:' section")
            key = self.base / host.ssh.key
            known_hosts = self.base / host.ssh.known_hosts
            index = self.topology.hosts.index(host)
            missing += [
                (index, what, path)
                for what, path in (("key", key), ("known_hosts", known_hosts))
                if not path.is_file()
            ]
            result[host.name] = SshEndpoint(
                host=host.name,
                address=host.ssh.address,
                port=host.ssh.port,
                user=host.ssh.user,
                key_file=key,
                known_hosts=known_hosts,
            )
        if missing:
            # Point at the topology line that names the file, like any other bad input.
            _, doc = load_topology_with_source(self.topology_path)
            raise TopologyError(
                [
                    doc.issue(("hosts", i, "ssh", what), f"expected an existing file, got {path}")
                    for i, what, path in missing
                ]
            )
        return result

    def provision(self, hosts: Sequence[Host], deadline: float) -> dict[str, SshEndpoint]:
        endpoints = self.endpoints(hosts)
        connections = [SshHost(e) for e in endpoints.values()]
        try:
            connect_all(connections)
        finally:
            for conn in connections:
                conn.close()
        self.progress(f"{len(endpoints)} lab host(s) answer over SSH")
        return endpoints
