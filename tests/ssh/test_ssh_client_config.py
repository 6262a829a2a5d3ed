"""The rendered OpenSSH client config, checked with the real ssh client."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.ssh import SshEndpoint, SshHost, render_ssh_config

from .sshd import Sshd, keygen


def _ssh(config: Path, name: str, command: str = "true") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(config), name, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def _write(tmp_path: Path, *endpoints: SshEndpoint) -> Path:
    config = tmp_path / "ssh_config"
    config.write_text(render_ssh_config(endpoints))
    return config


def test_rendered_block(tmp_path: Path) -> None:
    endpoint = SshEndpoint(
        host="dut1",
        address="10.0.0.5",
        key_file=tmp_path / "id",
        known_hosts=tmp_path / "known_hosts",
    )
    text = render_ssh_config([endpoint])
    block = text.split("\n\n")[1]
    assert block.splitlines() == [
        "Host dut1",
        "    HostName 10.0.0.5",
        "    Port 22",
        "    User root",
        f"    IdentityFile {tmp_path}/id",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {tmp_path}/known_hosts",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    LogLevel ERROR",
    ]


def test_real_ssh_logs_in_with_the_config(sshd: Sshd, tmp_path: Path) -> None:
    config = _write(tmp_path, sshd.endpoint("h0"), sshd.endpoint("h1"))
    assert "HostKeyAlias" not in config.read_text()
    for name in ("h0", "h1"):
        done = _ssh(config, name, "echo $USER")
        assert (done.returncode, done.stdout, done.stderr) == (0, "root\n", "")


def test_real_ssh_refuses_a_changed_host_key(sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {keygen(tmp_path / 'other')}\n")
    config = _write(tmp_path, sshd.endpoint("h0", known_hosts=known_hosts))
    done = _ssh(config, "h0")
    assert done.returncode == 255
    assert "Host key verification failed" in done.stderr


def test_real_ssh_refuses_an_unpinned_host(sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    config = _write(tmp_path, sshd.endpoint("h0", known_hosts=known_hosts))
    done = _ssh(config, "h0")
    assert done.returncode == 255
    assert known_hosts.read_text() == ""  # Nothing was learned.


def test_key_pinned_by_lab_name_gets_a_host_key_alias(sshd: Sshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"dut7 {sshd.host_key}\n")
    endpoint = sshd.endpoint("dut7", known_hosts=known_hosts)
    config = _write(tmp_path, endpoint)
    assert "    HostKeyAlias dut7\n" in config.read_text()
    assert _ssh(config, "dut7").returncode == 0
    # The bench trusts exactly the same key.
    with SshHost(endpoint) as host:
        assert host.run("true").ok


def test_paths_with_spaces_and_percent_signs(sshd: Sshd, tmp_path: Path) -> None:
    odd = tmp_path / "lab 1 %d"
    odd.mkdir()
    shutil.copy(sshd.client_key, odd / "id key")
    shutil.copy(sshd.known_hosts, odd / "known hosts")
    config = _write(
        tmp_path, sshd.endpoint("h0", key_file=odd / "id key", known_hosts=odd / "known hosts")
    )
    assert f'IdentityFile "{tmp_path}/lab 1 %%d/id key"' in config.read_text()
    done = _ssh(config, "h0")
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("name", ["", "two words", "web*", "a,b", "!x"])
def test_names_that_are_not_host_patterns_are_rejected(tmp_path: Path, name: str) -> None:
    endpoint = SshEndpoint(
        host=name, address="10.0.0.1", key_file=tmp_path / "k", known_hosts=tmp_path / "kh"
    )
    with pytest.raises(ValueError, match="ssh_config Host pattern"):
        render_ssh_config([endpoint])


def test_duplicate_names_are_rejected(sshd: Sshd) -> None:
    with pytest.raises(ValueError, match="more than once"):
        render_ssh_config([sshd.endpoint("h0"), sshd.endpoint("h0")])
