"""Connecting: host-key pinning, authentication, unreachable hosts, lost connections."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.errors import HostError
from bench.ssh import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyMismatch,
    HostUnreachable,
    SshHost,
    UnknownHostKey,
)

from .sshd import Sshd, keygen


@pytest.fixture
def other_host_key(tmp_path: Path) -> str:
    return keygen(tmp_path / "other_host_key")


def test_connects_and_reports_state(sshd: Sshd) -> None:
    with SshHost(sshd.endpoint()) as host:
        assert host.connected
        assert host.run("whoami").stdout == "root\n"
    assert not host.connected


def test_mismatched_host_key_is_refused_before_login(
    sshd: Sshd, tmp_path: Path, other_host_key: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other_host_key}\n")
    logins = sshd.logins()
    host = SshHost(sshd.endpoint(known_hosts=known_hosts))
    with pytest.raises(HostKeyMismatch) as caught:
        host.connect()
    message = str(caught.value)
    assert (
        f"the host key of h0 (127.0.0.1:{sshd.port}) does not match the pinned key in "
        f"{known_hosts}" in message
    )
    assert "connection was refused" in message
    assert not host.connected
    with pytest.raises(ConnectionLost, match="not connected"):
        host.run("true")
    # The server never saw the client authenticate, let alone run a command.
    assert sshd.logins() == logins


def test_pinned_key_of_another_type_is_a_mismatch(sshd: Sshd, tmp_path: Path) -> None:
    # The server has only an ed25519 key; a host pinned with ECDSA cannot prove it.
    pub = keygen(tmp_path / "ecdsa_key", "ecdsa")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {pub}\n")
    with pytest.raises(HostKeyMismatch):
        SshHost(sshd.endpoint(known_hosts=known_hosts)).connect()


def test_right_key_among_several_pinned_keys_is_accepted(
    sshd: Sshd, tmp_path: Path, other_host_key: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{sshd.port} {other_host_key}\n"
        f"# the new key, while the old one is still pinned\n"
        f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n"
    )
    with SshHost(sshd.endpoint(known_hosts=known_hosts)) as host:
        assert host.run("true").ok


@pytest.mark.parametrize("content", ["", "[127.0.0.1]:1 {key}\n", "127.0.0.1 {key}\n"])
def test_unpinned_host_is_refused(sshd: Sshd, tmp_path: Path, content: str) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(content.format(key=sshd.host_key))
    logins = sshd.logins()
    with pytest.raises(UnknownHostKey) as caught:
        SshHost(sshd.endpoint(known_hosts=known_hosts)).connect()
    message = str(caught.value)
    assert f"no host key is pinned for h0 (127.0.0.1:{sshd.port}) in {known_hosts}" in message
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert "refused" in message
    assert sshd.logins() == logins


def test_missing_known_hosts_file_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(UnknownHostKey):
        SshHost(sshd.endpoint(known_hosts=tmp_path / "absent")).connect()


def test_key_pinned_under_lab_name_is_accepted(sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"dut1 {sshd.host_key}\n")
    with SshHost(sshd.endpoint("dut1", known_hosts=known_hosts)) as host:
        assert host.run("true").ok


def test_unknown_client_key_fails_authentication(sshd: Sshd, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    with pytest.raises(AuthenticationFailed) as caught:
        SshHost(sshd.endpoint(key_file=tmp_path / "stranger")).connect()
    assert "public-key authentication as 'root'" in str(caught.value)
    assert str(tmp_path / "stranger") in str(caught.value)


def test_unreadable_client_key_fails_authentication(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(AuthenticationFailed, match="cannot load private key"):
        SshHost(sshd.endpoint(key_file=tmp_path / "absent")).connect()


def test_closed_port_is_unreachable(sshd: Sshd) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        known_hosts = sshd.dir / f"kh-{port}"
        known_hosts.write_text(f"[127.0.0.1]:{port} {sshd.host_key}\n")
        with pytest.raises(HostUnreachable, match=f"127.0.0.1:{port}"):
            SshHost(sshd.endpoint(port=port, known_hosts=known_hosts)).connect()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never says anything."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_connect_deadline_covers_a_silent_server(
    sshd: Sshd, silent_server: int, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{silent_server} {sshd.host_key}\n")
    host = SshHost(sshd.endpoint(port=silent_server, known_hosts=known_hosts), connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(HostUnreachable, match="did not finish in time"):
        host.connect()
    assert time.monotonic() - started < 1.5


def test_lost_connection_is_reported_and_reconnect_works(
    make_host: Callable[..., SshHost],
) -> None:
    host = make_host()
    # $PPID is the sshd process serving this connection.
    with pytest.raises(ConnectionLost, match="connection was lost") as caught:
        host.run("kill -KILL $PPID")
    assert str(caught.value).startswith("h0: ")
    assert not host.connected
    with pytest.raises(ConnectionLost, match=r"h0: the connection to 127\.0\.0\.1"):
        host.run("true")
    host.connect()
    assert host.run("echo again").stdout == "again\n"


def test_hashed_known_hosts_is_understood(sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known_hosts)], check=True)
    assert "127.0.0.1" not in known_hosts.read_text()
    with SshHost(sshd.endpoint(known_hosts=known_hosts)) as host:
        assert host.run("true").ok


def test_wildcards_and_negations_follow_openssh(sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.?]:* {sshd.host_key}\n")
    with SshHost(sshd.endpoint(known_hosts=known_hosts)) as host:
        assert host.run("true").ok
    known_hosts.write_text(f"[127.0.0.?]:*,![127.0.0.1]:{sshd.port} {sshd.host_key}\n")
    with pytest.raises(UnknownHostKey):
        SshHost(sshd.endpoint(known_hosts=known_hosts)).connect()


def test_unreadable_known_hosts_is_its_own_error(sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_bytes(b"\xff\xfe not text\n")
    with pytest.raises(HostError, match="cannot read known_hosts file") as caught:
        SshHost(sshd.endpoint(known_hosts=known_hosts)).connect()
    assert not isinstance(caught.value, UnknownHostKey)
