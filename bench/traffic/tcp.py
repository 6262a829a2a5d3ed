"""The TCP continuity probe, driven from the controller: one stream, hashed at both ends."""

from __future__ import annotations

from dataclasses import dataclass

from bench.errors import UsageError
from bench.lab import Lab
from bench.ssh import CommandTimeout
from bench.traffic.engine import agent_command, install_agent, last_json, running, wait_ready

DEFAULT_PORT = 5201


@dataclass(frozen=True)
class TcpContinuity:
    """What one TCP stream went through."""

    sent_bytes: int
    received_bytes: int
    sent_sha256: str
    received_sha256: str
    longest_stall_ms: float
    stalls: int
    reset: bool
    error: str

    @property
    def intact(self) -> bool:
        """Every byte arrived, in order, unchanged, on the same connection."""
        return (
            not self.reset
            and not self.error
            and self.sent_bytes == self.received_bytes
            and self.sent_sha256 == self.received_sha256
        )


def _address_of(lab: Lab, host: str) -> str:
    for machine, _, address in lab.data_interfaces():
        if machine == host:
            return address
    raise UsageError(f"tcp probe: {host} has no interface with an address")


def run_tcp_probe(
    lab: Lab,
    source: str,
    server: str,
    *,
    duration_s: float,
    rate_bytes_s: float | None = None,
    port: int = DEFAULT_PORT,
    stall_ms: float = 100.0,
) -> TcpContinuity:
    """Stream from ``source`` to ``server`` (a lab host) for ``duration_s``; compare the ends."""
    address = _address_of(lab, server)
    client_host, server_host = lab.host(source), lab.host(server)
    install_agent(lab, client_host)
    install_agent(lab, server_host)
    serve_cmd = (
        f"{agent_command(lab, server_host, 'tcp_probe.py')} serve --bind {address} "
        f"--port {port} --stall-ms {stall_ms:g}"
    )
    rate = f" --rate {rate_bytes_s:g}" if rate_bytes_s else ""
    send_cmd = (
        f"{agent_command(lab, client_host, 'tcp_probe.py')} send --to {address} "
        f"--port {port} --duration {duration_s:g}{rate}"
    )
    with running(server_host, serve_cmd) as receiver:
        wait_ready(receiver, "TCP probe server")
        with running(client_host, send_cmd) as sender:
            wait_ready(sender, "TCP probe client")
            sent = last_json(
                sender.wait(timeout=duration_s + 60).stdout, source, "TCP probe client"
            )
        try:
            served_out = receiver.wait(timeout=30).stdout
        except CommandTimeout as stopped:
            served_out = stopped.stdout
    served = last_json(served_out, server, "TCP probe server")
    return TcpContinuity(
        sent_bytes=int(sent["bytes"]),
        received_bytes=int(served["bytes"]),
        sent_sha256=str(sent["sha256"]),
        received_sha256=str(served["sha256"]),
        longest_stall_ms=float(served["longest_stall_ms"]),
        stalls=int(served["stalls"]),
        reset=bool(sent["reset"] or served["reset"]),
        error=str(sent.get("error", "")),
    )


def run_tcp_echo_probe(
    lab: Lab,
    source: str,
    address: str,
    *,
    duration_s: float,
    rate_bytes_s: float | None = None,
    port: int = DEFAULT_PORT,
    stall_ms: float = 100.0,
) -> TcpContinuity:
    """Stream from ``source`` to an echo server at ``address`` (a guest that runs nothing of
    the bench's) and read it back: what came back is compared with what was sent."""
    client_host = lab.host(source)
    install_agent(lab, client_host)
    rate = f" --rate {rate_bytes_s:g}" if rate_bytes_s else ""
    send_cmd = (
        f"{agent_command(lab, client_host, 'tcp_probe.py')} send --to {address} --port {port} "
        f"--duration {duration_s:g}{rate} --echo --stall-ms {stall_ms:g}"
    )
    with running(client_host, send_cmd) as sender:
        wait_ready(sender, "TCP probe client")
        sent = last_json(sender.wait(timeout=duration_s + 60).stdout, source, "TCP probe client")
    complete = bool(sent.get("echo_complete"))
    return TcpContinuity(
        sent_bytes=int(sent["bytes"]),
        received_bytes=int(sent["echo_bytes"]),
        sent_sha256=str(sent["sha256"]),
        received_sha256=str(sent["echo_sha256"]),
        longest_stall_ms=float(sent["longest_stall_ms"]),
        stalls=int(sent["stalls"]),
        reset=bool(sent["reset"] or sent["echo_reset"]),
        error=str(sent.get("error", "")) or ("" if complete else "the echo never ended"),
    )
