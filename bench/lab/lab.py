"""A lab that is up: its topology, its journal, and SSH access to every host.

This is what the CLI and the pytest plugin hold. It never creates anything;
``lifecycle.py`` does, and hands one of these back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.errors import UsageError
from bench.lab.processes import is_running
from bench.lab.state import LabState
from bench.ssh import SshEndpoint, SshHost, connect_all
from bench.topology import Topology


def endpoint_to_json(endpoint: SshEndpoint) -> dict[str, Any]:
    return {
        "address": endpoint.address,
        "port": endpoint.port,
        "user": endpoint.user,
        "key_file": str(endpoint.key_file),
        "known_hosts": str(endpoint.known_hosts),
    }


def endpoint_from_json(host: str, data: dict[str, Any]) -> SshEndpoint:
    return SshEndpoint(
        host=host,
        address=data["address"],
        port=int(data["port"]),
        user=data["user"],
        key_file=Path(data["key_file"]),
        known_hosts=Path(data["known_hosts"]),
    )


class Lab:
    """SSH access to the hosts of a running lab (connections are opened on first use)."""

    def __init__(self, topology: Topology, topology_path: Path, state: LabState) -> None:
        self.topology = topology
        self.topology_path = topology_path
        self.state = state
        self.endpoints = {
            name: endpoint_from_json(name, data) for name, data in state.endpoints.items()
        }
        self.log_dir: Path | None = None
        self._hosts: dict[str, SshHost] = {}

    @property
    def name(self) -> str:
        return self.topology.lab.name

    def endpoint(self, name: str) -> SshEndpoint:
        """The SSH endpoint of host ``name``; a clear error lists the hosts if it is unknown."""
        try:
            return self.endpoints[name]
        except KeyError:
            known = ", ".join(self.endpoints) or "none"
            raise UsageError(f"lab {self.name!r} has no host {name!r} (hosts: {known})") from None

    def host(self, name: str) -> SshHost:
        """A connected SSH driver for host ``name`` (one per host, reused)."""
        return self.hosts([name])[0]

    def hosts(self, names: Sequence[str] | None = None) -> list[SshHost]:
        """Connected SSH drivers for ``names`` (default: every host), connecting in parallel."""
        wanted = list(names) if names is not None else list(self.endpoints)
        fresh = [
            SshHost(self.endpoint(n), log_path=self._log_path(n))
            for n in wanted
            if n not in self._hosts
        ]
        if fresh:
            try:
                connect_all(fresh)
            except BaseException:
                for host in fresh:  # those that did connect must not leak
                    host.close()
                raise
            self._hosts.update({h.endpoint.host: h for h in fresh})
        return [self._hosts[n] for n in wanted]

    def _log_path(self, name: str) -> Path | None:
        if self.log_dir is None:
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{name}.log"

    def status(self) -> dict[str, Any]:
        """What ``npabench status --json`` prints: the lab and each host's SSH endpoint."""
        sshd = {
            r.name.removeprefix("sshd "): is_running(r)
            for r in self.state.resources
            if r.kind == "process" and r.name.startswith("sshd ")
        }
        hosts = []
        for host in self.topology.hosts:
            entry: dict[str, Any] = {"name": host.name, "backend": host.backend, "role": host.role}
            if host.name in self.endpoints:
                entry["ssh"] = endpoint_to_json(self.endpoints[host.name])
            if host.name in sshd:
                entry["sshd_running"] = sshd[host.name]
            hosts.append(entry)
        instruments = [
            {
                "name": i.name,
                "kind": i.kind,
                "emulated": i.emulated,
                "resource": self.state.instruments.get(i.name, i.resource),
                "channels": i.channels,
                "wiring": [{"channel": w.channel, "to": w.to} for w in i.wiring],
            }
            for i in self.topology.instruments
        ]
        return {
            "lab": self.name,
            "status": self.state.status,
            "topology": str(self.topology_path),
            "state_dir": str(self.state.directory),
            "hosts": hosts,
            "instruments": instruments,
        }

    def instrument_resource(self, name: str) -> str:
        """The VISA resource string of instrument ``name`` (an emulator's is known once up)."""
        for instrument in self.topology.instruments:
            if instrument.name == name:
                return self.state.instruments.get(name, instrument.resource)
        known = ", ".join(i.name for i in self.topology.instruments) or "none"
        raise UsageError(f"lab {self.name!r} has no instrument {name!r} (instruments: {known})")

    def close(self) -> None:
        """Close every SSH connection (the lab itself stays up)."""
        for host in self._hosts.values():
            host.close()
        self._hosts.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
