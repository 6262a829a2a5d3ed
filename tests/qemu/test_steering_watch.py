"""The host's steering watcher (``bench.qemu.steering_watch``), run as the controller runs
it (:func:`~bench.qemu.kernel_log.watch_command`) in a network namespace of its own with a
real bridge and two TAPs: the guest kernel's serial port is a Unix socket this test serves.

Checked: each net_failover line moves the guest's MAC to the right TAP before it is
reported; steering off only reports, and on again moves to where the last word puts it;
the controller's own requests go where asked until a word was heard, which then wins; a
failed move is reported with the command and its exit status; the watcher ends when the
controller's channel or the serial port does."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.qemu.kernel_log import watch_command

MAC = "02:4e:52:00:0a:01"
STANDBY, PRIMARY = "wsb0", "wpr0"
REGISTERED = b"[   12.5] net_failover virtio0 eth0: failover primary slave:eth2 registered\r\n"
UNREGISTERED = b"net_failover virtio0 eth0: failover primary slave:eth2 unregistered\r\n"


def _ns_run(ns: str, command: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, f"{command}: exit {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.fixture
def bridge_ns() -> Iterator[str]:
    """A namespace with bridge ``br0`` and the guest's two TAPs as its ports; removed after."""
    ns = f"npbtest-steer-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        _ns_run(
            ns,
            " && ".join(
                [
                    "ip link add br0 type bridge",
                    *(f"ip tuntap add dev {tap} mode tap" for tap in (STANDBY, PRIMARY)),
                    *(f"ip link set {tap} master br0 up" for tap in (STANDBY, PRIMARY)),
                    *(f"bridge link set dev {tap} learning off" for tap in (STANDBY, PRIMARY)),
                    "ip link set br0 up",
                    f"bridge fdb replace {MAC} dev {STANDBY} master static",
                ]
            ),
        )
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _port_of(ns: str) -> str | None:
    """The bridge port ``MAC`` is on (static entries only)."""
    entries = json.loads(_ns_run(ns, "bridge -j fdb show br br0") or "[]")
    ports = [e["ifname"] for e in entries if e.get("mac") == MAC and "static" in e.get("state", "")]
    assert len(ports) <= 1, entries
    return ports[0] if ports else None


class Watcher:
    """The watcher process, with the serial port's server end and its reports."""

    def __init__(self, ns: str, work: Path, primary_tap: str = PRIMARY) -> None:
        path = work / "kmsg.sock"
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen(1)
        command = watch_command(str(path), MAC, STANDBY, primary_tap, steering=True)
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns, "sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.server.settimeout(10.0)
        self.serial, _ = self.server.accept()
        assert self.process.stderr is not None
        assert b"relay: connected" in self.process.stderr.readline()
        self.pending = b""

    def report(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next JSON line on its stdout, within ``timeout``."""
        assert self.process.stdout is not None
        out = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no report within {timeout} s (have {self.pending!r})"
            if select.select([out], [], [], remaining)[0]:
                chunk = os.read(out, 4096)
                assert chunk, "the watcher ended"
                self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        said: dict[str, Any] = json.loads(line)
        return said

    def ask(self, request: str, seq: int) -> dict[str, Any]:
        """Send ``request`` with ``seq``; its answer (the next report: nothing else is due)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{request} {seq}\n".encode())
        self.process.stdin.flush()
        said = self.report()
        assert said["seq"] == str(seq), said
        return said

    def close(self) -> None:
        self.serial.close()
        self.server.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def watcher(bridge_ns: str, tmp_path: Path) -> Iterator[Watcher]:
    w = Watcher(bridge_ns, tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_the_watcher_steers_at_the_kernels_word_then_reports(
    watcher: Watcher, bridge_ns: str
) -> None:
    """Steps: the kernel says registered (in pieces, after boot noise), then unregistered.
    Verify: each report names the event and netdev, says it steered and how long that took,
    and by the time it is read the MAC is already on that TAP."""
    before = time.time()
    stream = b"rcS: up\r\n" + REGISTERED
    for at in range(0, len(stream), 9):  # a serial port delivers in small pieces
        watcher.serial.sendall(stream[at : at + 9])
    said = watcher.report()
    assert said["event"] == "primary-registered" and said["netdev"] == "eth2", said
    assert said["steered"] == "primary" and "steer_error" not in said, said
    assert before <= said["t"] <= time.time() and said["steer_ms"] >= 0, said
    assert _port_of(bridge_ns) == PRIMARY

    watcher.serial.sendall(UNREGISTERED)
    said = watcher.report()
    assert (said["event"], said["steered"]) == ("primary-unregistered", "standby"), said
    assert _port_of(bridge_ns) == STANDBY


def test_with_steering_off_it_reports_and_on_again_it_follows_the_last_word(
    watcher: Watcher, bridge_ns: str
) -> None:
    """Steps: turn steering off, the kernel says registered; turn it on. Verify: each
    request is answered with its seq; off, the report has no ``steered``, the MAC stays on
    the standby and a steer request is refused (``steered`` null); turned on, the MAC goes
    where the last word puts it (the primary)."""
    assert watcher.ask("off", 1)["steering"] is False
    watcher.serial.sendall(REGISTERED)
    said = watcher.report()
    assert said["event"] == "primary-registered" and "steered" not in said, said
    assert _port_of(bridge_ns) == STANDBY
    assert watcher.ask("steer primary", 2)["steered"] is None
    assert _port_of(bridge_ns) == STANDBY

    said = watcher.ask("on", 3)
    assert said["steering"] is True and said["steered"] == "primary", said
    assert _port_of(bridge_ns) == PRIMARY


def test_a_request_goes_where_asked_until_a_word_was_heard_which_then_wins(
    watcher: Watcher, bridge_ns: str
) -> None:
    """Steps: ask for the primary before any word; the kernel says unregistered; ask for the
    primary again (a stale look of the controller's); send nonsense. Verify: the first
    request moves the MAC and says since when; after the word the MAC stays on the standby
    and the answer says so, with the word's move time; nonsense gets an error answer."""
    before = time.time()
    said = watcher.ask("steer primary", 7)
    assert said["steered"] == "primary" and before <= said["t"] <= time.time(), said
    assert _port_of(bridge_ns) == PRIMARY

    watcher.serial.sendall(UNREGISTERED)
    word = watcher.report()
    assert word["steered"] == "standby", word
    said = watcher.ask("steer primary", 8)
    assert said["steered"] == "standby" and said["t"] >= word["t"], said
    assert _port_of(bridge_ns) == STANDBY
    assert "unknown request" in watcher.ask("sideways now", 9)["error"]


def test_a_failed_move_is_reported_with_the_command_and_its_exit_status(
    bridge_ns: str, tmp_path: Path
) -> None:
    """Steps: a watcher whose primary TAP does not exist hears registered. Verify: the
    report carries ``steer_error`` naming the command and its exit status; the MAC stays
    where it was; the watcher goes on and ends when its channel (stdin) closes."""
    w = Watcher(bridge_ns, tmp_path, primary_tap="gone0")
    try:
        w.serial.sendall(REGISTERED)
        said = w.report()
        assert said["steered"] == "primary", said
        assert "bridge fdb replace" in said["steer_error"] and "gone0" in said["steer_error"]
        assert "exit " in said["steer_error"], said
        assert _port_of(bridge_ns) == STANDBY
        assert w.process.stdin is not None
        w.process.stdin.close()
        assert w.process.wait(timeout=10) == 0
    finally:
        w.close()


def test_the_watcher_ends_when_the_serial_port_closes(watcher: Watcher) -> None:
    """QEMU gone (its socket closed): the watcher ends by itself, with status 0."""
    watcher.serial.close()
    assert watcher.process.wait(timeout=10) == 0
