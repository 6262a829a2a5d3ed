"""Runs on a QEMU host: the guest kernel's word on its primary, and steering at that word.

This file is the whole program (standard library only, ASCII): the controller sends its
text over SSH and runs it with the host's ``python3``
(:func:`bench.qemu.kernel_log.watch_command`).

It reads the guest kernel's serial port (a Unix socket of QEMU's). The moment
net_failover prints that it took or let go of the primary, it moves the guest's MAC
on the host bridge to the primary's TAP or to the standby's (``bridge fdb replace``),
on the host and at once, as a NIC's PF reacts to its VF driver, with no round trip
to the controller. Then it reports one JSON line on stdout::

    {"event": "primary-registered", "netdev": "eth2", "t": 1733.2,
     "steered": "primary", "steer_ms": 1.7}

``t`` is when the line was read (this host's clock); ``steer_ms`` how long the move
took after it; ``steer_error`` says why it failed. With steering off it only reports.

It is the only writer of the guest's entry while it runs, so moves never cross. The
controller asks it, one line on stdin each, answered with the same ``seq``:

* ``on SEQ`` / ``off SEQ``: steering on or off. Turned on, it moves the MAC to where
  the last word it heard puts it.
* ``steer primary|standby SEQ``: the controller saw the guest change without a word
  (it asked the guest's console, or QEMU said so). The last word heard, if any, is
  newer than any such look and wins; else the MAC goes where asked. The answer says
  where the MAC is and since when (``t``).

It says ``relay: connected`` on stderr once it is connected to the socket, and ends
when stdin ends (the SSH channel closed) or the socket does (QEMU gone). ``MAC`` ``-``:
a guest without a primary, whose words are only reported.

With ``PF VF`` (a real VF as the primary), ``PRIMARY_PORT`` is the PF's netdev and a
move also gives the VF the guest's MAC and takes it out of the PF's unicast filter
(before the bridge moves to the PF), or puts it in the PF's filter (after the bridge
moved to the standby), as ``bench.qemu.host_net`` does; the VF's MAC is cleared by
the controller once the VF has left the guest, never here.

Usage: python3 steering_watch.py SOCKET MAC STANDBY_TAP PRIMARY_PORT on|off [PF VF]
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


class Steering:
    """Where the guest's MAC is on the bridge, and moving it."""

    def __init__(
        self, mac: str, taps: dict[str, str], on: bool, vf: tuple[str, str] | None = None
    ) -> None:
        self.mac, self.taps, self.on = mac, taps, on and mac != "-"
        self.vf = vf  # (PF netdev, VF number): a real VF is the primary
        self.at: str | None = None  # where this program last put it (None: not yet)
        self.since = 0.0  # when it got there
        self.word: str | None = None  # where the kernel's last word puts it

    def commands(self, to: str) -> list[list[str]]:
        fdb = ["bridge", "fdb", "replace", self.mac, "dev", self.taps[to], "master", "static"]
        if self.vf is None:
            return [fdb]
        pf, vf = self.vf
        pf_filter = ["bridge", "fdb", "replace", self.mac, "dev", pf, "self"]
        if to == "primary":
            return [
                ["ip", "link", "set", "dev", pf, "vf", vf, "mac", self.mac],
                ["sh", "-c", f"bridge fdb del {self.mac} dev {pf} self 2>/dev/null; true"],
                fdb,
            ]
        return [fdb, pf_filter]  # the VF keeps its MAC until it has left the guest

    def move(self, to: str) -> dict[str, object]:
        """Move the MAC to ``to`` (if it is not there already); what happened."""
        if self.at == to:
            return {"steered": to, "steer_ms": 0.0}
        started = time.time()
        error = ""
        for command in self.commands(to):
            try:
                done = subprocess.run(command, capture_output=True, check=False)
            except OSError as err:
                error = f"{' '.join(command)}: {err}"
            else:
                if done.returncode:
                    said = done.stderr.decode(errors="replace").strip()
                    error = f"{' '.join(command)}: exit {done.returncode}: {said}"
            if error:
                break
        if error:
            self.at = None  # unknown now
            return {"steered": to, "steer_ms": round((time.time() - started) * 1000, 3),
                    "steer_error": error}  # fmt: skip
        self.at, self.since = to, time.time()
        return {"steered": to, "steer_ms": round((self.since - started) * 1000, 3)}

    def heard(self, change: str) -> dict[str, object]:
        self.word = "primary" if change == "registered" else "standby"
        return self.move(self.word) if self.on else {}

    def asked(self, request: list[str]) -> dict[str, object]:
        """A controller's request (``on``, ``off``, ``steer TO``); the answer's fields."""
        if request[0] in ("on", "off"):
            self.on = request[0] == "on" and self.mac != "-"
            moved = self.move(self.word) if self.on and self.word else {}
            return {"steering": self.on, **moved}
        if request[0] == "steer" and len(request) == 2 and request[1] in self.taps:
            if not self.on:
                return {"steered": None}
            moved = self.move(self.word or request[1])
            return {**moved, "t": self.since} if "steer_error" not in moved else moved
        return {"error": f"unknown request {' '.join(request)!r}"}


def main() -> int:
    path, mac, standby, primary, steering_word = sys.argv[1:6]
    vf = (sys.argv[6], sys.argv[7]) if len(sys.argv) >= 8 else None
    ports = {"standby": standby, "primary": primary}
    steering = Steering(mac, ports, steering_word == "on", vf)
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
                if found is not None:
                    change = found.group(2).decode()
                    netdev = found.group(1).decode(errors="replace")
                    moved = steering.heard(change)
                    say(event=f"primary-{change}", netdev=netdev, t=t, **moved)
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                return 0
            control += data
            *lines, control = control.split(b"\n")
            for line in lines:
                words = line.decode(errors="replace").split()
                if len(words) < 2:
                    continue
                answer = {"t": time.time(), **steering.asked(words[:-1])}
                say(seq=words[-1], **answer)


if __name__ == "__main__":
    sys.exit(main())
