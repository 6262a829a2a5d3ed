"""Runs on a QEMU host: the guest kernel's word on its primary, and steering at that word.

This file is the whole program (standard library only): the controller sends its text
over SSH and runs it with the host's ``python3`` (:func:`bench.qemu.kernel_log.watch_command`),
so it works on a namespace host and on a lab server alike.

It reads the guest kernel's serial port (a Unix socket of QEMU's). The moment
net_failover prints that it took or let go of the primary, it moves the guest's MAC
on the host bridge to the primary's TAP or to the standby's (``bridge fdb replace``)
— on the host, at once, as a NIC's PF reacts to its VF driver's word, with no round
trip to the controller — and then reports one JSON line on stdout::

    {"event": "primary-registered", "netdev": "eth2", "t": 1733.2,
     "steered": "primary", "steer_ms": 1.7}

``t`` is when the line was read (this host's clock); ``steer_ms`` how long the move
took after it; ``steer_error`` says why it failed. With steering off it only reports.
A line ``on`` or ``off`` on stdin turns steering on or off; it is answered with
``{"steering": true|false, "t": ...}``. It says ``relay: connected`` on stderr once it
is connected to the socket, and ends when stdin ends (the SSH channel closed) or the
socket does (QEMU gone).

Usage: python3 steering_watch.py SOCKET MAC STANDBY_TAP PRIMARY_TAP on|off
"""

import json
import os
import re
import select
import socket
import subprocess
import sys
import time

WORD = re.compile(rb"failover primary slave:(\S+) (registered|unregistered)")


def say(**what: object) -> None:
    os.write(1, (json.dumps(what) + "\n").encode())


def steer(mac: str, tap: str) -> str:
    """Move ``mac`` to ``tap`` (a static entry); what went wrong, or ''."""
    done = subprocess.run(
        ["bridge", "fdb", "replace", mac, "dev", tap, "master", "static"],
        capture_output=True,
        check=False,
    )
    if done.returncode == 0:
        return ""
    said = done.stderr.decode(errors="replace").strip()
    return f"bridge fdb replace {mac} dev {tap}: exit {done.returncode}: {said}"


def main() -> int:
    path, mac, standby, primary, steering_word = sys.argv[1:6]
    steering = steering_word == "on"
    port = socket.socket(socket.AF_UNIX)
    try:
        port.connect(path)
    except OSError as err:
        sys.exit(f"relay: cannot connect to {path}: {err}")
    sys.stderr.write("relay: connected\n")
    sys.stderr.flush()
    pending = control = b""
    while True:
        ready = select.select([0, port.fileno()], [], [])[0]
        if port.fileno() in ready:  # the guest first: a word waiting there is the urgent thing
            data = port.recv(65536)
            if not data:
                return 0
            t = time.time()
            pending += data
            *lines, pending = pending.split(b"\n")
            pending = pending[-4096:]  # a line never grows without bound
            for line in lines:
                found = WORD.search(line)
                if found is None:
                    continue
                change = found.group(2).decode()
                said: dict[str, object] = {
                    "event": f"primary-{change}",
                    "netdev": found.group(1).decode(errors="replace"),
                    "t": t,
                }
                if steering:
                    to = "primary" if change == "registered" else "standby"
                    error = steer(mac, primary if to == "primary" else standby)
                    said["steered"] = to
                    said["steer_ms"] = round((time.time() - t) * 1000, 3)
                    if error:
                        said["steer_error"] = error
                say(**said)
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                return 0
            control += data
            *lines, control = control.split(b"\n")
            for line in lines:
                steering = line.strip() == b"on"
                say(steering=steering, t=time.time())


if __name__ == "__main__":
    sys.exit(main())
