"""The guest kernel's primary events, read off its serial port (``bench.qemu.kernel_log``).

Parsing is checked on lines as Linux 6.1's net_failover prints them; the reader on a real
socket pair, fed in pieces the way a serial stream arrives."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from bench.qemu.kernel_log import KernelLogReader, primary_event

REGISTERED = b"[   12.5] net_failover virtio0 eth0: failover primary slave:eth2 registered"
UNREGISTERED = b"net_failover virtio0 eth0: failover primary slave:eth2 unregistered\r"


def test_primary_lines_become_events_and_others_do_not() -> None:
    assert primary_event(REGISTERED) == ("primary-registered", {"netdev": "eth2"})
    assert primary_event(UNREGISTERED) == ("primary-unregistered", {"netdev": "eth2"})
    standby = b"net_failover virtio0 eth0: failover standby slave:eth1 registered"
    assert primary_event(standby) is None
    assert primary_event(b"e1000e 0000:01:00.0 eth2: NIC Link is Up") is None


def test_the_reader_hands_on_events_split_across_reads_in_order() -> None:
    ours, theirs = socket.socketpair()
    seen: list[tuple[str, dict[str, Any], float]] = []
    got_two = threading.Event()

    def sink(name: str, details: dict[str, Any], t: float) -> None:
        seen.append((name, details, t))
        if len(seen) == 2:
            got_two.set()

    before = time.time()
    reader = KernelLogReader(ours, "vm1", sink)  # type: ignore[arg-type]
    try:
        stream = b"boot noise\n" + UNREGISTERED + b"\n" + REGISTERED + b"\n"
        for at in range(0, len(stream), 7):  # a serial port delivers in small pieces
            theirs.sendall(stream[at : at + 7])
        assert got_two.wait(5.0), seen
        assert [name for name, _, _ in seen] == ["primary-unregistered", "primary-registered"]
        assert all(before <= t <= time.time() for _, _, t in seen)
        theirs.close()
        deadline = time.monotonic() + 5.0
        while reader.reading and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not reader.reading, "the reader did not notice its stream ended"
    finally:
        reader.close()
