"""A lab host's clock against the controller's (``bench.qemu.remote.host_clock_offset``):
QMP and the kernel watcher stamp events with the host's clock, and the bench puts them
on its own with this offset."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.qemu.remote import host_clock_offset
from bench.ssh import SshHost


def test_a_host_on_this_machine_has_no_offset(host: SshHost) -> None:
    """The test sshd runs here: same clock, so the offset is within a round trip of 0."""
    sent = time.monotonic()
    offset = host_clock_offset(host, samples=3)
    per_trip = (time.monotonic() - sent) / 3
    assert abs(offset) <= per_trip, (offset, per_trip)


@dataclass
class _Said:
    stdout: str
    stderr: str = ""
    exit_status: int = 0


class _ShiftedHost:
    """A host whose clock runs ``shift`` seconds ahead (the arithmetic alone)."""

    name = "shifted"

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def run(self, command: str, timeout: float = 30.0, check: bool = False) -> _Said:
        assert "EPOCHREALTIME" in command
        return _Said(f"{time.time() + self.shift:.6f}\n")


def test_the_offset_is_the_host_clock_minus_ours() -> None:
    assert abs(host_clock_offset(_ShiftedHost(12.5)) - 12.5) < 0.01
    assert abs(host_clock_offset(_ShiftedHost(-3.25)) + 3.25) < 0.01
