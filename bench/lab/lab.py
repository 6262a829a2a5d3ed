"""A lab that is up: its topology, its journal, SSH access to every host and guest, and the
control sockets of its emulated NICs and guests' vmxnet3 devices.

This is what the CLI and the pytest plugin hold. It never creates anything;
``lifecycle.py`` does, and hands one of these back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.errors import HostError, LabError, UsageError
from bench.lab.data_path import guest_control_socket, nic_control_socket
from bench.lab.processes import is_running
from bench.lab.state import LabState
from bench.ssh import SshEndpoint, SshHost, connect_all
from bench.topology import Guest, Topology
from nic_emulators.control import ControlClient, ControlError

#: How long ``status`` waits for one guest's device to answer.
STATUS_TIMEOUT_S = 2.0


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
    """SSH access to the hosts and guests of a running lab (connections opened on first use)."""

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

    @property
    def guests(self) -> list[str]:
        """Names of the lab's guests, in topology order (each also reachable by ``host()``)."""
        return [g.name for g in self.topology.guests]

    def _guest(self, name: str) -> Guest:
        try:
            return self.topology.guest(name)
        except KeyError:
            known = ", ".join(self.guests) or "none"
            raise UsageError(f"lab {self.name!r} has no guest {name!r} (guests: {known})") from None

    def guest_control(self, guest: str, timeout: float = 10.0) -> ControlClient:
        """A control connection to ``guest``'s vmxnet3 device (``status``, ``switch``...).

        UsageError naming the guests if ``guest`` is unknown; LabError if its
        device does not answer.
        """
        self._guest(guest)
        path = guest_control_socket(self.state.directory, guest)
        return self._connect(path, f"the vmxnet3 device of guest {guest}", timeout)

    def guest_driver(self, guest: str, timeout: float = 10.0) -> ControlClient:
        """A control connection to ``guest``'s driver (the shell): the guest's own view —
        counters, buffer accounting, plugin faults and reload, RX refill."""
        self._guest(guest)
        path = guest_control_socket(self.state.directory, guest).with_name("shell.sock")
        return self._connect(path, f"the driver of guest {guest}", timeout)

    def guest_host(self, guest: str) -> str:
        """The host ``guest`` runs on now (its topology host until it migrates)."""
        spec = self._guest(guest)
        return str(self.state.placement.get(guest, {}).get("host") or spec.host)

    def guest_at(self, guest: str) -> Guest:
        """``guest``'s topology entry as it stands now: with the host it runs on and the NIC
        it takes VFs from there (a migrated guest's are its destination's)."""
        spec = self._guest(guest)
        placed = self.state.placement.get(guest)
        if not placed:
            return spec
        return spec.model_copy(
            update={
                "host": placed["host"],
                "nic": placed.get("nic"),
                "vswitch_uplink": placed.get("vswitch_uplink"),
                "switch": self.topology.guest_switch(spec),
            }
        )

    def guest_nic(self, guest: str, timeout: float = 10.0) -> ControlClient:
        """A control connection to the NIC ``guest`` takes its VFs from (on its current host)."""
        spec = self.guest_at(guest)
        nic = self.topology.guest_nic(spec)
        if nic is None:
            raise UsageError(f"guest {guest!r} has no SR-IOV NIC on host {spec.host!r}")
        return self.nic_control(spec.host, nic.name, timeout)

    def nic_control(self, host: str, nic: str, timeout: float = 10.0) -> ControlClient:
        """A control connection to NIC ``nic`` of ``host`` (an emulated NIC's emulator)."""
        try:
            spec = self.topology.host(host)
        except KeyError as err:
            raise UsageError(str(err.args[0])) from None
        if spec.nic(nic) is None:
            known = ", ".join(n.name for n in spec.nics) or "none"
            raise UsageError(f"host {host!r} has no NIC {nic!r} (NICs: {known})")
        path = nic_control_socket(self.state.directory, host, nic)
        return self._connect(path, f"the emulator of NIC {nic} of host {host}", timeout)

    @staticmethod
    def _connect(path: Path, what: str, timeout: float) -> ControlClient:
        try:
            return ControlClient(path, timeout=timeout)
        except ControlError as err:
            raise LabError(f"{what} does not answer: {err}") from None

    def guest_status(self, guest: str) -> dict[str, Any]:
        """What ``guest``'s vmxnet3 device reports (mode, reason, VF, plugin, counters); for
        a QEMU guest, what the guest shows on its console (mode, reason, primary).

        A device that does not answer is ``{"mode": "unreachable", "error": ...}``:
        status is for looking, so it never fails on one silent guest.
        """
        try:
            if self.reflector_address(guest) is not None:  # a QEMU guest: ask its console
                from bench.hypervisor import hypervisor_for

                hv = hypervisor_for(self)
                try:
                    return hv.status(guest)
                finally:
                    hv.close()
            with self.guest_control(guest, timeout=STATUS_TIMEOUT_S) as device:
                return device.call("status")
        except (HostError, LabError, ControlError, OSError, ValueError) as err:
            return {"mode": "unreachable", "error": str(err)}

    def data_interfaces(self) -> list[tuple[str, str, str]]:
        """(machine, interface, IP address) of every addressed data interface (hosts, guests
        with a shell of the bench's; a QEMU guest is reached at its address, see
        ``reflector_address``)."""
        from bench.lab.data_path import GUEST_TAP

        found = [
            (host.name, iface.name, str(iface.address.ip))
            for host in self.topology.hosts
            for iface in host.interfaces
            if iface.address is not None
        ]
        found += [(g.name, GUEST_TAP, str(g.address.ip)) for g in self.topology.emulated_guests()]
        return found

    def reflector_address(self, name: str) -> str | None:
        """The address of QEMU guest ``name``: it runs no agent of the bench, its own kernel
        answers ICMP echo (traffic to it is a round trip). None for any other machine."""
        for guest in self.topology.qemu_guests():
            if guest.name == name:
                return str(guest.address.ip)
        return None

    def backend_of(self, name: str) -> str:
        """The backend of host ``name``, or of the host guest ``name`` runs on.

        What decides how to reach a machine's files (an emulated host or guest
        shares this machine's file system).
        """
        for host in self.topology.hosts:
            if host.name == name:
                return host.backend
        return self.topology.host(self._guest(name).host).backend

    def endpoint(self, name: str) -> SshEndpoint:
        """The SSH endpoint of host or guest ``name``; a clear error lists them if unknown."""
        try:
            return self.endpoints[name]
        except KeyError:
            known = ", ".join(self.endpoints) or "none"
            raise UsageError(f"lab {self.name!r} has no host {name!r} (hosts: {known})") from None

    def host(self, name: str) -> SshHost:
        """A connected SSH driver for host or guest ``name`` (one per name, reused)."""
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

    def _running(self, prefix: str) -> dict[str, bool]:
        """Journalled processes named ``<prefix> <what>``: what -> whether it runs."""
        return {
            r.name.removeprefix(prefix): is_running(r)
            for r in self.state.resources
            if r.kind == "process" and r.name.startswith(prefix)
        }

    def status(self) -> dict[str, Any]:
        """What ``npabench status --json`` prints: the lab, each host's SSH endpoint, each
        emulated NIC, each guest with what its vmxnet3 device reports, each instrument."""
        sshd = self._running("sshd ")
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
            "nics": self._nics_status(),
            "guests": [self._guest_entry(g) for g in self.topology.guests],
            "instruments": instruments,
        }

    def _nics_status(self) -> list[dict[str, Any]]:
        emulators = self._running("nic ")
        return [
            {
                "host": host.name,
                "name": nic.name,
                "model": nic.model,
                "pci": nic.pci,
                "vfs": nic.vfs,
                "link": nic.link,
                **(
                    {"emulator_running": emulators[f"{host.name}/{nic.name}"]}
                    if f"{host.name}/{nic.name}" in emulators
                    else {}
                ),
            }
            for host in self.topology.hosts
            for nic in host.nics
        ]

    def _guest_entry(self, guest: Guest) -> dict[str, Any]:
        guest = self.guest_at(guest.name)
        nic = self.topology.guest_nic(guest)
        entry: dict[str, Any] = {
            "name": guest.name,
            "host": guest.host,
            "address": str(guest.address),
            "mac": guest.mac,
            "nic_mode": guest.nic_mode,
            "nic": nic.name if nic else None,
        }
        if guest.name in self.endpoints:
            entry["ssh"] = endpoint_to_json(self.endpoints[guest.name])
        for key, prefix in (
            ("sshd_running", "sshd "),
            ("device_running", "vmxnet3 "),
            ("shell_running", "shell "),
        ):
            running = self._running(prefix)
            if guest.name in running:
                entry[key] = running[guest.name]
        device = self.guest_status(guest.name)
        entry.update(
            {
                "mode": device.get("mode"),
                "reason": device.get("reason"),
                "vf": device.get("vf"),
                "plugin": device.get("plugin"),
            }
        )
        if "error" in device:
            entry["error"] = device["error"]
        else:
            entry["device"] = device
        return entry

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
