"""Pinned host keys and bench-enforced deadlines, against the lab's real sshds."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bench.lab import attach
from bench.lab.state import state_root
from bench.ssh import HostKeyMismatch, SshHost
from tests.labkit import (
    cmdline,
    leftovers,
    npabench,
    recorded_pids,
    wait_for,
    write_topology,
)


@pytest.fixture
def lab_path(tmp_path: Path):
    path, name = write_topology(tmp_path, hosts=2)
    npabench("up", str(path), check=True)
    pids = recorded_pids(name)
    yield path, name
    npabench("down", str(path))
    assert leftovers(name, pids) == []


def test_changed_host_key_is_refused(lab_path) -> None:
    path, name = lab_path
    host_dir = state_root() / name / "hosts" / "h1"
    key = host_dir / "ssh_host_ed25519_key"
    old_public = key.with_suffix(".pub").read_text()
    # The host is "reinstalled": a new host key, and sshd re-reads it on SIGHUP.
    key.unlink()
    key.with_suffix(".pub").unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert key.with_suffix(".pub").read_text() != old_public
    sshd_pid = next(p for p in recorded_pids(name) if "h1/sshd_config" in cmdline(p))
    os.kill(sshd_pid, signal.SIGHUP)

    with attach(path) as lab:
        endpoint = lab.endpoint("h1")

        def presents_new_key() -> bool:
            out = subprocess.run(
                ["ssh-keyscan", "-t", "ed25519", endpoint.address],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            return old_public.split()[1] not in out and "ssh-ed25519" in out

        wait_for(presents_new_key, 10, "sshd to serve the new host key")
        with pytest.raises(HostKeyMismatch) as refused:
            SshHost(endpoint).connect()
        assert "h1" in str(refused.value) and endpoint.address in str(refused.value)
        assert lab.host("h0").run("true").exit_status == 0, "other hosts are unaffected"

    cli = npabench("exec", str(path), "h1", "--", "touch /tmp/should-not-run")
    assert cli.returncode == 3
    assert "h1" in cli.stderr and "Traceback" not in cli.stderr


def test_command_past_its_deadline_is_stopped_and_reported(lab_path) -> None:
    path, name = lab_path
    started = time.monotonic()
    done = npabench("exec", str(path), "h0", "--timeout", "1", "--", "sleep 300; echo never")
    elapsed = time.monotonic() - started
    assert done.returncode == 3
    assert "h0" in done.stderr and "sleep 300" in done.stderr, done.stderr
    assert "never" not in done.stdout
    assert elapsed < 15, f"the deadline was not enforced ({elapsed:.1f} s)"
    # Nothing of the command survives in the host's namespace (only sshd itself).
    pids = subprocess.run(
        ["ip", "netns", "pids", f"npa-{name}-h0"], capture_output=True, text=True
    ).stdout.split()
    commands = [cmdline(int(p)) for p in pids]
    assert not [c for c in commands if "sleep" in c], commands
