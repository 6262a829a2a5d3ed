"""The ``lab`` backend: real servers that run sshd; the bench reaches them over SSH only.

Bringing such hosts "up" means: boot those the bench runs itself (``qemu:``, a QEMU guest
with an SR-IOV NIC), prove every host answers over SSH with its pinned host key, then
record each real PF as it is and give it the VFs and VF settings the topology asks for
(``real_nics``; ``down`` puts them back).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.errors import LabError, UsageError
from bench.lab.backends.qemu_hosts import boot_qemu_hosts
from bench.lab.backends.real_nics import configure_real_nics
from bench.lab.backends.registry import register_backend
from bench.lab.lab import endpoint_to_json
from bench.lab.state import LabState
from bench.progress import Progress
from bench.ssh import SshEndpoint, SshHost, connect_all
from bench.topology import Host, Topology, TopologyError, load_topology_with_source
from drivers.pf_control import PfControlError


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
        self.state = state

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
        boot_qemu_hosts(hosts, self.base, self.state, self.progress, deadline)
        connections = {name: SshHost(e) for name, e in endpoints.items()}
        try:
            connect_all(list(connections.values()))
            self.progress(f"{len(endpoints)} lab host(s) answer over SSH")
            # Journalled before any PF changes: a failed up restores the PFs through them.
            self.state.endpoints.update({n: endpoint_to_json(e) for n, e in endpoints.items()})
            self.state.save()
            configure_real_nics(hosts, connections, self.state, self.progress)
        except PfControlError as err:
            raise LabError(str(err)) from err
        finally:
            for conn in connections.values():
                conn.close()
        return endpoints
