"""``nic_emulators.send_batch``: frames onto a real veth with sendmmsg, in order, and what
the kernel refuses counted as drops."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nic_emulators.send_batch import SLOT_BYTES, SLOTS
from tests.traffic.netns import Namespaces, can_run, ip

ETH_P_ALL = 0x0003
SENDER = """
import json, socket, sys
from nic_emulators.send_batch import SendBatch
frames = [bytes.fromhex(h) for h in json.loads(sys.stdin.read())]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
sock.bind((sys.argv[1], 0))
sock.setblocking(False)
batch = SendBatch(sock)
print(batch.send(frames))
batch.close()
"""


@pytest.fixture
def veth() -> Iterator[Namespaces]:
    reason = can_run()
    if reason:
        pytest.skip(reason)
    net = Namespaces(("a", "b"))
    try:
        net.create()
        net.veth(("a", "va", "02:4e:50:00:00:0a"), ("b", "vb", "02:4e:50:00:00:0b"))
        for role, iface in (("a", "va"), ("b", "vb")):
            ip("-n", net.ns(role), "link", "set", iface, "mtu", "16000")
        yield net
    finally:
        net.close()


def _frame(n: int, size: int) -> bytes:
    head = bytes.fromhex("024e5000000b024e5000000a88b5") + n.to_bytes(4, "big")
    return head + bytes((n + i) & 0xFF for i in range(size - len(head)))


def _send(net: Namespaces, frames: list[bytes]) -> int:
    """Send ``frames`` from ``a`` with a SendBatch in a process of that namespace; refused."""
    done = subprocess.run(
        ["ip", "netns", "exec", net.ns("a"), sys.executable, "-c", SENDER, "va"],
        input="[" + ",".join(f'"{f.hex()}"' for f in frames) + "]",
        capture_output=True, text=True, timeout=60, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    return int(done.stdout)


def _receiver(net: Namespaces) -> subprocess.Popen[str]:
    code = (
        "import socket, sys\n"
        f"s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons({ETH_P_ALL}))\n"
        "s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: hold them all\n"
        "s.bind(('vb', 0)); s.settimeout(3)\n"
        "print('READY', flush=True)\n"
        "try:\n"
        "    while True: print(s.recv(65536).hex(), flush=True)\n"
        "except TimeoutError: pass\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", net.ns("b"), sys.executable, "-c", code],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


def test_frames_arrive_whole_and_in_order(veth: Namespaces) -> None:
    """Steps: 3 batches' worth of frames of mixed sizes (60 bytes to a jumbo, and two
    longer than a slot, which go alone) sent with one SendBatch.send.
    Verify: none refused; the peer receives exactly those bytes, in order."""
    sizes = [60, 128, 1514, 9000, SLOT_BYTES, SLOT_BYTES + 1, 64, 15000]
    frames = [_frame(n, sizes[n % len(sizes)]) for n in range(3 * SLOTS + 5)]
    receiver = _receiver(veth)
    try:
        assert _send(veth, frames) == 0
        out, _ = receiver.communicate(timeout=30)
    finally:
        receiver.kill()
    got = [bytes.fromhex(line) for line in out.split()]
    ours = [f for f in got if f[12:14] == b"\x88\xb5"]  # not the kernel's own (IPv6 ND)
    assert ours == frames


def test_refused_frames_are_counted(veth: Namespaces) -> None:
    """Steps: take the sending veth down, send 70 frames (more than one batch).
    Verify: every one is reported refused, and the call returns (no retry loop)."""
    ip("-n", veth.ns("a"), "link", "set", "va", "down")
    assert _send(veth, [_frame(n, 128) for n in range(70)]) == 70
