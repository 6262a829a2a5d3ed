"""The serial console protocol without QEMU: the guest's own console script, run by this
machine's ``sh`` on one end of a socket pair, and :class:`GuestConsole` on the other."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.errors import HostError, LabError
from bench.qemu.console import (
    ConsoleError,
    GuestConsole,
    console_arguments,
    console_shell_script,
    wait_for_line,
)

READY = "test-guest: ready"


class Trickle:
    """A stream that hands over ``noise`` first, then the real bytes one at a time (markers
    arrive split across reads)."""

    def __init__(self, sock: socket.socket, noise: bytes) -> None:
        self.sock = sock
        self.noise = noise

    def sendall(self, data: bytes, /) -> None:
        self.sock.sendall(data)

    def recv(self, size: int, /) -> bytes:
        if self.noise:
            chunk, self.noise = self.noise[:7], self.noise[7:]
            return chunk
        return self.sock.recv(1)

    def settimeout(self, timeout: float | None, /) -> None:
        self.sock.settimeout(timeout)


@pytest.fixture
def guest_end() -> Iterator[socket.socket]:
    """Our end of a socket pair whose other end is the console script's stdin and stdout."""
    ours, theirs = socket.socketpair()
    shell = subprocess.Popen(
        ["sh", "-c", console_shell_script(READY)],
        stdin=theirs.fileno(),
        stdout=theirs.fileno(),
        stderr=subprocess.DEVNULL,  # stty: not a terminal here
    )
    theirs.close()
    try:
        yield ours
    finally:
        ours.close()  # the script reads end-of-file and ends
        try:
            shell.wait(timeout=5)
        except subprocess.TimeoutExpired:
            shell.kill()
            shell.wait()


def test_output_and_status_come_back_exactly(guest_end: socket.socket) -> None:
    console = GuestConsole(guest_end, "g1")
    result = console.run("printf 'no newline'; echo ' err' >&2; exit 3")
    assert (result.exit_status, result.output) == (3, "no newline err\n")
    assert console.run("printf 'two\\n\\n'").output == "two\n\n"
    assert console.run("true").output == ""
    command = "echo \"$((6 * 7))\" '$x' `echo b`\necho second line"
    assert console.run(command).output == "42 $x b\nsecond line\n"


def test_noise_and_answers_to_other_requests_are_skipped(guest_end: socket.socket) -> None:
    noise = (
        b"[    1.234] virtio_net virtio0 eth0: failover master:eth0 registered\n"
        b"@npabench-begin:0123456789abcdef\nstale\n@npabench-end:0123456789abcdef 1\n"
        b"\x00\xff garbage without a newline"
    )
    console = GuestConsole(Trickle(guest_end, noise), "g1")
    assert console.run("echo one").output == "one\n"
    assert console.run("echo two; exit 5").exit_status == 5


def test_a_late_answer_is_not_taken_for_the_next(guest_end: socket.socket) -> None:
    console = GuestConsole(guest_end, "g1")
    with pytest.raises(ConsoleError, match=r"^g1: `sleep 0.5; echo late`: no answer"):
        console.run("sleep 0.5; echo late", timeout=0.2)
    assert console.run("echo on time", timeout=5).output == "on time\n"


def test_check_names_the_guest_the_command_and_the_status(guest_end: socket.socket) -> None:
    console = GuestConsole(guest_end, "vm7")
    with pytest.raises(HostError) as caught:
        console.run("echo nope; exit 2", check=True)
    assert str(caught.value) == "vm7: `echo nope; exit 2` failed (exit 2): nope"
    assert caught.value.host == "vm7"


def test_a_console_that_goes_away_is_an_error() -> None:
    ours, theirs = socket.socketpair()
    with ours:
        theirs.close()
        with pytest.raises(ConsoleError, match=r"^g1: `true`: console write failed"):
            GuestConsole(ours, "g1").run("true", timeout=2)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"@npabench-begin:")  # a guest that says little, then hangs up
        console = GuestConsole(theirs, "g1")
        ours.shutdown(socket.SHUT_WR)
        with pytest.raises(ConsoleError, match=r"^g1: `true`: the console connection closed"):
            console.run("true", timeout=2)


def test_console_arguments_escape_commas(tmp_path: Path) -> None:
    work = tmp_path / "a,b"
    chardev = console_arguments(work, "vm1")[1]
    assert f"path={tmp_path}/a,,b/vm1.console.sock," in chardev
    assert chardev.endswith(f"logfile={tmp_path}/a,,b/vm1.console.log")
    with pytest.raises(LabError, match="too long"):
        console_arguments(tmp_path / ("x" * 120), "vm1")


def test_wait_for_line_sees_a_line_written_later(tmp_path: Path) -> None:
    log = tmp_path / "vm1.console.log"

    def boot() -> None:
        time.sleep(0.2)
        log.write_bytes(b"kernel noise\n" + READY[:5].encode())
        time.sleep(0.2)
        with log.open("ab") as handle:
            handle.write(READY[5:].encode() + b"\n")

    writer = threading.Thread(target=boot)
    writer.start()
    wait_for_line(log, READY, time.monotonic() + 5, lambda: True, "vm1")
    writer.join()
    with pytest.raises(LabError, match="vm1: QEMU exited"):
        wait_for_line(log, "never", time.monotonic() + 5, lambda: False, "vm1")
    with pytest.raises(LabError, match="vm1: no 'never' on the console in time"):
        wait_for_line(log, "never", time.monotonic() + 0.2, lambda: True, "vm1")
