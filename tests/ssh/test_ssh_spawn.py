"""Spawned processes: streaming output, stopping the whole tree, cleanup on close."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bench.ssh import CommandTimeout, OutputTimeout, SshHost

from .sshd import pid_alive, wait_dead


@pytest.fixture
def host(shared_host: SshHost) -> SshHost:
    """This module's tests share one connection (connecting costs ~0.2 s here)."""
    return shared_host


def test_streams_lines_and_stop_kills_the_tree(host: SshHost) -> None:
    process = host.spawn(
        "for i in 1 2 3; do echo line$i; done; sleep 300 & echo child $!; sleep 301"
    )
    assert [process.read_stdout_line(timeout=5) for _ in range(3)] == ["line1", "line2", "line3"]
    words = (process.read_stdout_line(timeout=5) or "").split()
    assert words[0] == "child"
    child = int(words[1])
    assert pid_alive(process.pid)
    assert pid_alive(child)
    assert process.running

    started = time.monotonic()
    result = process.stop()
    assert time.monotonic() - started < 2.0
    assert not process.running
    assert wait_dead([process.pid, child], 2.0) == []
    assert result.exit_status == -1  # Killed by a signal: SSH reports no status.
    assert process.stop() is result  # Stopping again changes nothing.


def test_wait_returns_the_result_of_a_process_that_ends(host: SshHost) -> None:
    process = host.spawn("echo out; echo err >&2; printf tail; exit 4")
    result = process.wait(timeout=5)
    assert (result.exit_status, result.stdout, result.stderr) == (4, "out\ntail", "err\n")
    assert result.command == "echo out; echo err >&2; printf tail; exit 4"
    assert not process.running


def test_iteration_yields_lines_until_the_end(host: SshHost) -> None:
    process = host.spawn("seq 1 5; printf 'no newline'")
    assert list(process) == ["1", "2", "3", "4", "5", "no newline"]
    result = process.wait(timeout=5)
    assert result.ok
    assert result.stdout == ""  # All of it was consumed line by line.


def test_compound_commands_and_quotes(host: SshHost) -> None:
    process = host.spawn("cd /; echo \"it's $(pwd)\" && echo 'second'")
    assert list(process) == ["it's /", "second"]
    assert process.wait(timeout=5).ok


def test_read_timeout_leaves_the_process_running(host: SshHost) -> None:
    with host.spawn("echo first; sleep 300") as process:
        assert process.read_stdout_line(timeout=5) == "first"
        with pytest.raises(OutputTimeout, match=r"no complete line within 0\.2 s"):
            process.read_stdout_line(timeout=0.2)
        assert pid_alive(process.pid)
    assert wait_dead([process.pid], 2.0) == []


def test_wait_timeout_stops_the_process(host: SshHost) -> None:
    process = host.spawn("echo partial; sleep 300")
    with pytest.raises(CommandTimeout) as caught:
        process.wait(timeout=0.5)
    assert caught.value.stdout == "partial\n"
    assert "`echo partial; sleep 300`" in str(caught.value)
    assert not process.running
    assert wait_dead([process.pid], 2.0) == []


def test_term_resistant_process_is_killed(host: SshHost) -> None:
    process = host.spawn("trap '' TERM; echo ready; sleep 300 & wait")
    assert process.read_stdout_line(timeout=5) == "ready"
    started = time.monotonic()
    process.stop(timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert wait_dead([process.pid], 2.0) == []


def test_context_manager_always_stops(host: SshHost) -> None:
    with pytest.raises(RuntimeError), host.spawn("sleep 300") as process:
        raise RuntimeError("test body failed")
    assert wait_dead([process.pid], 2.0) == []


def test_stop_works_while_the_shell_is_busy(host: SshHost) -> None:
    process = host.spawn("sleep 300")
    pending = host.send("sleep 0.3; echo done", timeout=5)  # Holds the host's shell.
    process.stop()
    assert wait_dead([process.pid], 2.0) == []
    assert host.collect(pending).stdout == "done\n"


def test_close_stops_forgotten_processes(make_host: Callable[..., SshHost]) -> None:
    host = make_host("forgetful")
    process = host.spawn("sleep 300 & echo $!; wait")
    child = int(process.read_stdout_line(timeout=5) or "0")
    other = host.spawn("sleep 302")
    assert pid_alive(child)
    host.close()
    assert wait_dead([process.pid, child, other.pid], 2.0) == []
    assert not process.running
    assert not other.running


def test_spawn_of_a_failing_command_reports_its_status(host: SshHost) -> None:
    process = host.spawn("no-such-command-npa")
    result = process.wait(timeout=5)
    assert result.exit_status == 127
    assert "no-such-command-npa" in result.stderr


def test_stop_from_another_thread_ends_a_blocked_reader(host: SshHost) -> None:
    process = host.spawn("echo one; sleep 300")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process))
    reader.start()
    deadline = time.monotonic() + 5
    while lines != ["one"]:
        assert time.monotonic() < deadline, "the reader never got the first line"
        reader.join(timeout=0.01)
    # The reader is now blocked waiting for a line that will never come.
    process.stop()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert lines == ["one"]
    assert wait_dead([process.pid], 2.0) == []
