"""Packet captures as test artifacts: tcpdump on a lab host for a chosen window.

The capture runs on the host (the data path never goes through the
controller) and ends up as a pcap in the test's artifacts directory, where
``bench.traffic.pcap`` can verify it offline.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.errors import HostError
from bench.lab import Lab

#: Enough for every header and the bench's payload stamp; keeps captures small.
DEFAULT_SNAPLEN = 256


@contextmanager
def capture(
    lab: Lab,
    host_name: str,
    interface: str,
    pcap: Path,
    *,
    bpf: str = "",
    snaplen: int = DEFAULT_SNAPLEN,
) -> Iterator[Path]:
    """Capture on ``host_name``'s ``interface`` for the duration of the block, into ``pcap``.

    Waits until tcpdump is really listening before the block starts, and
    until it has flushed the file after the block ends.
    """
    host = lab.host(host_name)
    local_host = lab.backend_of(host_name) == "emulated"
    remote = str(pcap) if local_host else f"/tmp/npabench-{secrets.token_hex(6)}.pcap"
    pcap.parent.mkdir(parents=True, exist_ok=True)
    command = (
        f"exec tcpdump -i {shlex.quote(interface)} -s {snaplen} -U -n --immediate-mode "
        "--time-stamp-precision=nano "
        f"-w {shlex.quote(remote)} {shlex.quote(bpf) if bpf else ''} 2>&1"
    )
    process = host.spawn(command)
    try:
        line = process.read_stdout_line(timeout=15)
        if line is None or "listening on" not in line:
            result = process.stop()
            raise HostError(host_name, f"tcpdump did not start: {line!r} {result.stdout[-300:]}")
        yield pcap
    finally:
        if process.running:
            process.stop()
        if not local_host:
            try:
                host.fetch(remote, pcap)
            finally:
                host.run(f"rm -f {shlex.quote(remote)}", timeout=10)
