"""The reference the data path is measured against: the plainest Python forwarding loop.

``python -m tests.benchmarks.raw_forwarder --guest-ns NS --tap eth0 --host-ns NS
--uplink up0 --mac MAC``: opens the guest's TAP (in the guest's namespace) and
a raw AF_PACKET socket on the host's uplink (in the host's namespace), then
moves frames between them — wire frames for the guest's MAC (or group
addresses) into the TAP, everything from the TAP onto the wire. One process,
one read and one write system call per frame: what the NPA data path's
processes are compared with on the same interfaces, in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import selectors
import signal
import socket
import struct
import sys

from drivers.tap import open_tap

CLONE_NEWNET = 0x40000000
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guest-ns", required=True)
    parser.add_argument("--tap", required=True)
    parser.add_argument("--host-ns", required=True)
    parser.add_argument("--uplink", required=True)
    parser.add_argument("--mac", required=True)
    args = parser.parse_args()
    enter_netns(args.guest_ns)
    tap = open_tap(args.tap)
    enter_netns(args.host_ns)
    wire = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    wire.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    wire.bind((args.uplink, 0))
    index = socket.if_nametoindex(args.uplink)
    wire.setsockopt(SOL_PACKET, 1, struct.pack("iHH8s", index, 1, 0, b""))  # promiscuous
    wire.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    wire.setblocking(False)
    mac = bytes.fromhex(args.mac.replace(":", ""))
    selector = selectors.DefaultSelector()
    selector.register(tap, selectors.EVENT_READ, "tap")
    selector.register(wire, selectors.EVENT_READ, "wire")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    print("READY", flush=True)
    read, write, recv, send = os.read, os.write, wire.recv, wire.send
    while not stopping:
        for key, _ in selector.select(0.1):
            if key.data == "tap":
                for _ in range(64):
                    try:
                        send(read(tap, 65536))
                    except BlockingIOError:
                        break
            else:
                for _ in range(64):
                    try:
                        frame = recv(65536)
                    except BlockingIOError:
                        break
                    if frame[:6] == mac or frame[0] & 1:
                        with contextlib.suppress(OSError):
                            write(tap, frame)
    return 0


if __name__ == "__main__":
    sys.exit(main())
