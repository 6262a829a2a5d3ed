"""Smoke suite: the lab is reachable and cabled as the topology says.

Runs on every backend; the first thing ``npabench run`` proves about a lab.
"""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

import pytest

from bench.instruments.registry import open_instrument
from bench.lab import Lab
from bench.ssh import SshHost, run_on_all
from bench.topology import Topology


@pytest.mark.catalogue("SMOKE-01")
@pytest.mark.requires("hosts:1")
def test_every_host_answers_over_ssh(lab: Lab, hosts: dict[str, SshHost]) -> None:
    """Steps: run one command on every host at once. Verify: each answers from its own address."""
    results = run_on_all(list(hosts.values()), "ip -o -4 addr show", timeout=10)
    assert list(results) == list(hosts), "fan-out must answer for every host, in order"
    for name, result in results.items():
        assert result.exit_status == 0, f"{name}: exit {result.exit_status}: {result.stderr}"
        address = lab.endpoint(name).address
        if _is_ip(address):
            assert f"inet {address}/" in result.stdout, (
                f"{name} answered, but does not own its SSH address {address}:\n{result.stdout}"
            )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _data_peers(topology: Topology) -> dict[str, list[tuple[str, str, str | None]]]:
    """For each host: (peer, peer address, peer MAC) of every host on a shared switch."""
    peers: dict[str, list[tuple[str, str, str | None]]] = {h.name: [] for h in topology.hosts}
    for host in topology.hosts:
        for iface in host.interfaces:
            for other in topology.hosts:
                if other.name == host.name:
                    continue
                for theirs in other.interfaces:
                    if theirs.switch == iface.switch and theirs.address and iface.address:
                        peers[host.name].append((other.name, str(theirs.address.ip), theirs.mac))
    return peers


@pytest.mark.catalogue("SMOKE-02")
@pytest.mark.requires("hosts:2")
def test_every_host_reaches_every_other(topology: Topology, hosts: dict[str, SshHost]) -> None:
    """Steps: each host pings every peer on its switches. Verify: replies, and ARP shows the
    peer's configured MAC (the frames really crossed the lab switch)."""
    peers = _data_peers(topology)
    if not any(peers.values()):
        pytest.skip("no two hosts share a switch with addresses")
    commands = {}
    for name, plist in peers.items():
        probes = [
            f"ping -q -c 2 -i 0.2 -W 2 {shlex.quote(addr)} >/dev/null || echo UNREACHABLE {addr}; "
            f"ip -o neigh show {shlex.quote(addr)}"
            for _, addr, _ in plist
        ]
        commands[name] = "; ".join(probes) or "true"
    failures = []
    for name, command in commands.items():
        result = hosts[name].run(command, timeout=30)
        for peer, addr, mac in peers[name]:
            if f"UNREACHABLE {addr}" in result.stdout:
                failures.append(f"{name} -> {peer} ({addr}): no reply")
            elif mac and f"lladdr {mac}" not in result.stdout:
                failures.append(f"{name} -> {peer} ({addr}): ARP entry is not {mac}")
    assert not failures, "\n".join(failures)


@pytest.mark.catalogue("SMOKE-03")
@pytest.mark.requires("hosts:1")
def test_every_instrument_answers_as_the_model_it_should_be(lab: Lab, artifacts: Path) -> None:
    """Steps: open each instrument of the topology through pyvisa. Verify: *IDN? names the
    expected model and the error queue is empty."""
    if not lab.topology.instruments:
        pytest.skip("the topology has no instruments")
    for spec in lab.topology.instruments:
        with open_instrument(
            spec.kind,
            lab.instrument_resource(spec.name),
            spec.channels,
            expected_model=spec.model,
            log_path=artifacts / f"{spec.name}.log",
            name=spec.name,
        ) as instrument:
            assert instrument.read_errors() == [], f"{spec.name} has errors queued"
