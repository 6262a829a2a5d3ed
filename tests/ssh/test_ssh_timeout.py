"""Deadlines: an overdue command is killed with its whole tree; the host goes on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.ssh import CommandTimeout, SshHost

from .sshd import wait_dead


def _pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


@pytest.fixture
def host(shared_host: SshHost) -> SshHost:
    """This module's tests share one connection (connecting costs ~0.2 s here)."""
    return shared_host


def test_overdue_command_raises_within_deadline_and_host_recovers(host: SshHost) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        host.run("sleep 30", timeout=1)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.0
    message = str(caught.value)
    assert message.startswith("shared: ")
    assert "`sleep 30`" in message
    assert "1 s" in message
    assert "stopped" in message
    assert host.run("echo alive").stdout == "alive\n"


def test_whole_process_tree_is_killed(host: SshHost, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The subshell itself, a background child, and a foreground grandchild.
    command = (
        f"echo $BASHPID > {pids}; sleep 300 & echo $! >> {pids}; "
        f"sh -c 'echo $$ >> {pids}; exec sleep 301'"
    )
    with pytest.raises(CommandTimeout):
        host.run(command, timeout=1)
    recorded = _pids(pids)
    assert len(recorded) == 3
    assert wait_dead(recorded, 2.0) == []
    assert host.run("echo $BASHPID").ok


def test_term_resistant_command_is_killed(host: SshHost, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        host.run(f"trap '' TERM; echo $BASHPID > {pids}; sleep 300 & wait", timeout=0.5)
    assert time.monotonic() - started < 2.0
    assert wait_dead(_pids(pids), 2.0) == []
    assert host.run("echo ok").stdout == "ok\n"


def test_partial_output_is_kept(host: SshHost) -> None:
    with pytest.raises(CommandTimeout) as caught:
        host.run("echo before; echo warn >&2; sleep 30", timeout=0.5)
    assert caught.value.stdout == "before\n"
    assert caught.value.stderr.startswith("warn\n")
    assert caught.value.command == "echo before; echo warn >&2; sleep 30"
    assert caught.value.timeout == 0.5


def test_command_finishing_before_deadline_is_not_a_timeout(host: SshHost) -> None:
    result = host.run("sleep 0.2; echo done", timeout=2)
    assert result.stdout == "done\n"
    assert 0.2 <= result.duration < 2


def test_stderr_of_a_stopped_command_has_no_wrapper_noise(host: SshHost) -> None:
    with pytest.raises(CommandTimeout) as caught:
        host.run("echo mine >&2; sleep 30", timeout=0.3)
    assert caught.value.stderr == "mine\n"
