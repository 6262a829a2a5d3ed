"""The guest kernel's primary events, read off its serial port (``bench.qemu.kernel_log``).

Parsing is checked on lines as Linux 6.1's net_failover prints them; the reader on a real
socket pair, fed the host watcher's reports in pieces the way a channel delivers them."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

from bench.qemu.kernel_log import WATCHER_ANSWER, KernelLogReader, primary_event

REGISTERED = b"[   12.5] net_failover virtio0 eth0: failover primary slave:eth2 registered"
UNREGISTERED = b"net_failover virtio0 eth0: failover primary slave:eth2 unregistered\r"


def test_primary_lines_become_events_and_others_do_not() -> None:
    assert primary_event(REGISTERED) == ("primary-registered", {"netdev": "eth2"})
    assert primary_event(UNREGISTERED) == ("primary-unregistered", {"netdev": "eth2"})
    standby = b"net_failover virtio0 eth0: failover standby slave:eth1 registered"
    assert primary_event(standby) is None
    assert primary_event(b"e1000e 0000:01:00.0 eth2: NIC Link is Up") is None


def test_the_reader_hands_on_watcher_reports_split_across_reads_in_order() -> None:
    """The host watcher's JSON lines, cut in pieces: each primary report becomes an event
    with the watcher's stamp and its steering details, an answer to a request becomes
    ``watcher-answer`` with its seq, anything else is skipped (a shell's noise before a
    line too); stamps of one read keep their order; the reader notices the stream ending."""
    ours, theirs = socket.socketpair()
    seen: list[tuple[str, dict[str, Any], float]] = []
    got_three = threading.Event()

    def sink(name: str, details: dict[str, Any], t: float) -> None:
        seen.append((name, details, t))
        if len(seen) == 3:
            got_three.set()

    t = time.time()
    reports = [
        {"event": "primary-unregistered", "netdev": "eth2", "t": t, "steered": "standby",
         "steer_ms": 1.5},
        {"seq": "4", "steering": False, "t": t},
        {"event": "primary-registered", "netdev": "eth2", "t": t},
    ]  # fmt: skip
    reader = KernelLogReader(ours, "vm1", sink)  # type: ignore[arg-type]
    try:
        lines = [json.dumps(r).encode() + b"\n" for r in reports]
        stream = b"relay noise\n" + b"motd: hi " + b"".join(lines) + b"[1, 2]\n"
        for at in range(0, len(stream), 7):  # a channel delivers in pieces
            theirs.sendall(stream[at : at + 7])
        assert got_three.wait(5.0), seen
        assert [name for name, _, _ in seen] == [
            "primary-unregistered",
            WATCHER_ANSWER,
            "primary-registered",
        ]
        assert seen[0][1] == {"netdev": "eth2", "steered": "standby", "steer_ms": 1.5}
        assert seen[1][1] == {"seq": "4", "steering": False}
        assert seen[2][1] == {"netdev": "eth2"}
        assert seen[0][2] == t and seen[0][2] < seen[1][2] < seen[2][2]
        theirs.close()
        deadline = time.monotonic() + 5.0
        while reader.reading and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not reader.reading, "the reader did not notice its stream ended"
    finally:
        reader.close()
