"""Commands over the persistent shell: output framing, exit status, isolation."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bench.ssh import CommandFailed, ConnectionLost, SshHost


@pytest.fixture
def host(shared_host: SshHost) -> SshHost:
    """This module's tests share one connection (connecting costs ~0.2 s here)."""
    return shared_host


def test_stdout_stderr_and_status_are_separated(host: SshHost) -> None:
    result = host.run("echo out; echo err >&2; exit 7")
    assert (result.stdout, result.stderr, result.exit_status) == ("out\n", "err\n", 7)
    assert not result.ok
    assert result.host == "shared"
    assert result.command == "echo out; echo err >&2; exit 7"
    assert 0 < result.duration < 5


def test_output_without_trailing_newline_is_kept_exactly(host: SshHost) -> None:
    result = host.run("printf abc; printf def >&2")
    assert (result.stdout, result.stderr) == ("abc", "def")


def test_empty_output(host: SshHost) -> None:
    result = host.run("true")
    assert (result.stdout, result.stderr, result.exit_status) == ("", "", 0)
    assert result.ok


def test_stderr_only(host: SshHost) -> None:
    result = host.run("echo oops >&2")
    assert (result.stdout, result.stderr) == ("", "oops\n")


def test_output_that_looks_like_frames_is_output(host: SshHost) -> None:
    fake = "\\n_npa0123456789abcdef R 0\\n\\n_npa0123456789abcdef P 1\\n"
    result = host.run(f"printf '{fake}'; printf '\\n_npa0123456789abcdef E\\n' >&2; exit 5")
    assert result.stdout == "\n_npa0123456789abcdef R 0\n\n_npa0123456789abcdef P 1\n"
    assert result.stderr == "\n_npa0123456789abcdef E\n"
    assert result.exit_status == 5


def test_output_around_the_pid_frame_is_joined_correctly(host: SshHost) -> None:
    # Output starts before the shell prints the job's PID frame and goes on after.
    result = host.run("printf 'a'; sleep 0.05; printf 'b\\n'; printf c")
    assert result.stdout == "ab\nc"


def test_utf8_and_undecodable_bytes(host: SshHost) -> None:
    result = host.run("printf 'gr\\303\\274\\303\\237e \\342\\234\\223 \\377end\\n'")
    assert result.stdout == "grüße ✓ \ufffdend\n"
    unicode_cmd = host.run("echo 'ünïcødé ✓'")
    assert unicode_cmd.stdout == "ünïcødé ✓\n"


def test_large_output(host: SshHost) -> None:
    result = host.run("seq 1 160000; head -c 300000 /dev/zero | tr '\\0' e >&2")
    expected = "".join(f"{i}\n" for i in range(1, 160001))
    assert len(expected) > 1_000_000
    assert result.stdout == expected
    assert result.stderr == "e" * 300_000


def test_quotes_and_multiline_commands(host: SshHost) -> None:
    result = host.run("echo 'it'\"'\"'s'; cat <<'EOF'\nline 'one'\n$HOME\nEOF")
    assert result.stdout == "it's\nline 'one'\n$HOME\n"


@pytest.mark.parametrize("breaker", ["exit 3", "cd /", "echo (", "set -e; false", "exec true"])
def test_commands_cannot_break_the_shell(host: SshHost, breaker: str) -> None:
    before = host.run("pwd; echo $BASHPID").stdout.split()
    host.run(breaker)
    after = host.run("pwd; echo ok")
    assert after.stdout.split() == [before[0], "ok"]


def test_syntax_error_is_reported_as_a_result(host: SshHost) -> None:
    result = host.run("echo (")
    assert result.exit_status == 2
    assert "syntax error" in result.stderr


def test_state_does_not_carry_over(host: SshHost) -> None:
    host.run("cd /tmp; export NPA_X=1; NPA_Y=2")
    result = host.run("pwd; echo ${NPA_X:-unset} ${NPA_Y:-unset}")
    assert result.stdout.splitlines()[1] == "unset unset"
    assert result.stdout.splitlines()[0] != "/tmp"


def test_stdin_is_dev_null(host: SshHost) -> None:
    # Would otherwise swallow the next commands written to the shell.
    assert host.run("cat", timeout=5).stdout == ""
    assert host.run("echo next").stdout == "next\n"


def test_late_output_of_a_previous_command_is_not_attributed(host: SshHost, tmp_path: Path) -> None:
    done = tmp_path / "done"
    host.run(f"(sleep 0.2; echo late; echo late-err >&2; touch {done}) &")
    deadline = time.monotonic() + 5
    # Wait until the late output is written (the file) and has reached this
    # side (the channel; white-box, as nothing public can tell).
    channel = host._shell._channel  # type: ignore[union-attr]
    assert channel is not None
    while not (done.exists() and channel.recv_ready() and channel.recv_stderr_ready()):
        assert time.monotonic() < deadline, "late output never arrived"
        threading.Event().wait(0.01)
    result = host.run("echo next")
    assert (result.stdout, result.stderr) == ("next\n", "")


def test_check_raises_command_failed_with_context(host: SshHost) -> None:
    with pytest.raises(CommandFailed) as caught:
        host.run("echo first >&2; echo 'no such thing' >&2; exit 4", check=True)
    message = str(caught.value)
    assert message.startswith("shared: ")
    assert "echo first" in message
    assert "exit status 4" in message
    assert "no such thing" in message
    assert caught.value.result.exit_status == 4
    assert host.run("true", check=True).ok


def test_killing_the_shell_is_reported_and_recovered(host: SshHost) -> None:
    with pytest.raises(ConnectionLost, match="persistent shell exited"):
        host.run("kill -KILL $$")
    assert host.connected
    assert host.run("echo back").stdout == "back\n"


def test_threads_share_a_host_safely(host: SshHost) -> None:
    failures: list[str] = []

    def worker(n: int) -> None:
        for i in range(30):
            out = host.run(f"echo {n}-{i}; echo {n}-{i}-err >&2").stdout
            if out != f"{n}-{i}\n":
                failures.append(out)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert failures == []


def test_nul_in_command_is_rejected(host: SshHost) -> None:
    with pytest.raises(ValueError, match="NUL"):
        host.run("echo a\0b")
    assert host.run("echo fine").stdout == "fine\n"


def test_output_racing_the_pid_frame_is_never_corrupted(host: SshHost) -> None:
    # The command's first write races the shell's PID frame; over many runs
    # both orders occur, and the output must come back intact every time.
    for i in range(300):
        assert host.run(f"echo {i}; printf x").stdout == f"{i}\nx"


def test_command_killed_by_a_signal(host: SshHost) -> None:
    result = host.run("kill -SEGV $BASHPID")
    assert result.exit_status == 139
    assert result.stderr == ""  # No job-control chatter about the wrapper.
    with pytest.raises(CommandFailed, match=r"exit status 139 \(as if killed by SIGSEGV\)"):
        result.check()
