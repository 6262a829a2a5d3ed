"""Opening a verified, authenticated SSH transport to one endpoint.

The bench opens the TCP socket itself rather than letting paramiko do it, to
set ``TCP_NODELAY``: commands and their framing are small writes, and Nagle's
algorithm would hold each one back for a round trip. Everything up to a
usable transport (TCP, handshake, host key, authentication) shares a single
deadline, so a dead or wedged host costs at most ``timeout`` seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import paramiko

from bench.ssh.endpoint import SshEndpoint
from bench.ssh.errors import AuthenticationFailed, HostKeyMismatch, HostUnreachable
from bench.ssh.known_hosts import PinnedKeys, pinned_keys

#: Seconds between SSH keepalives: notices a dead peer or a NAT that dropped
#: the flow even while no command is running.
KEEPALIVE_INTERVAL = 15


def load_private_key(host: str, key_file: Path) -> paramiko.PKey:
    """Load the client key (Ed25519, ECDSA or RSA; OpenSSH or PEM format)."""
    try:
        return paramiko.PKey.from_path(key_file)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise AuthenticationFailed(host, f"cannot load private key {key_file}: {exc}") from exc


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _connect_socket(endpoint: SshEndpoint, deadline: float) -> socket.socket:
    """A connected TCP socket with Nagle's algorithm turned off."""
    try:
        sock = socket.create_connection(
            (endpoint.address, endpoint.port), timeout=max(0.001, _remaining(deadline))
        )
    except OSError as exc:
        raise HostUnreachable(
            endpoint.host, f"cannot connect to {endpoint.display_address}: {exc}"
        ) from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _prefer_pinned_algorithms(transport: paramiko.Transport, pinned: PinnedKeys) -> None:
    """Ask first for host-key algorithms that can present a pinned key.

    A host has several keys; without this the server might present one that
    is not pinned and the check would fail although the host is genuine.
    (OpenSSH's client does the same.) Other algorithms stay allowed after
    them, so a host that lost its pinned key still fails as a mismatch.
    """
    options = transport.get_security_options()
    supported = list(options.key_types)
    first = [name for name in pinned.algorithms() if name in supported]
    options.key_types = first + [name for name in supported if name not in first]


def _handshake(endpoint: SshEndpoint, transport: paramiko.Transport, deadline: float) -> None:
    """Run the key exchange, bounded by ``deadline``."""
    done = threading.Event()
    transport.banner_timeout = transport.handshake_timeout = max(0.001, _remaining(deadline))
    try:
        transport.start_client(event=done)
    except paramiko.SSHException as exc:
        raise HostUnreachable(endpoint.host, f"SSH handshake failed: {exc}") from exc
    if not done.wait(_remaining(deadline)):
        raise HostUnreachable(
            endpoint.host,
            f"SSH handshake with {endpoint.display_address} did not finish in time",
        )
    if not transport.is_active():
        reason = transport.get_exception() or "connection closed"
        raise HostUnreachable(
            endpoint.host, f"SSH handshake with {endpoint.display_address} failed: {reason}"
        )


def _verify_host_key(
    endpoint: SshEndpoint, transport: paramiko.Transport, pinned: PinnedKeys
) -> None:
    """Refuse the connection unless the host presented a pinned key."""
    offered = transport.get_remote_server_key()
    if not pinned.accepts(offered):
        raise HostKeyMismatch(
            endpoint.host,
            endpoint.address,
            endpoint.port,
            endpoint.known_hosts,
            offered=f"{offered.get_name()} {offered.fingerprint}",
            pinned=pinned.describe(),
        )


def _authenticate(
    endpoint: SshEndpoint, transport: paramiko.Transport, key: paramiko.PKey, deadline: float
) -> None:
    """Public-key authentication, bounded by ``deadline``."""
    done = threading.Event()
    what = f"public-key authentication as {endpoint.user!r} with {endpoint.key_file}"
    try:
        transport.auth_publickey(endpoint.user, key, event=done)
    except paramiko.SSHException as exc:
        raise AuthenticationFailed(endpoint.host, f"{what} failed: {exc}") from exc
    if not done.wait(_remaining(deadline)):
        raise AuthenticationFailed(endpoint.host, f"{what} did not finish in time")
    if not transport.is_authenticated():
        reason = transport.get_exception() or "rejected"
        raise AuthenticationFailed(endpoint.host, f"{what} failed: {reason}")


def open_transport(endpoint: SshEndpoint, timeout: float) -> paramiko.Transport:
    """Connect, verify the host key, authenticate; all within ``timeout`` seconds.

    The host key is checked before authenticating, so a host that fails the
    check never sees the bench's signature, let alone a command.
    """
    deadline = time.monotonic() + timeout
    pinned = pinned_keys(endpoint)
    key = load_private_key(endpoint.host, endpoint.key_file)
    sock = _connect_socket(endpoint, deadline)
    try:
        transport = paramiko.Transport(sock)
    except Exception:
        sock.close()
        raise
    try:
        _prefer_pinned_algorithms(transport, pinned)
        _handshake(endpoint, transport, deadline)
        _verify_host_key(endpoint, transport, pinned)
        _authenticate(endpoint, transport, key, deadline)
        transport.set_keepalive(KEEPALIVE_INTERVAL)
    except BaseException:
        transport.close()
        sock.close()
        raise
    return transport
