"""TCP continuity probe: one long-lived stream whose bytes are hashed at both ends.

Standard library only; runs on lab hosts like the traffic agent. A migration
or a fallback that keeps the guest's connections alive shows as equal
hashes and byte counts; what it cost shows as the longest stall (the
longest wait between two reads that returned data) and the number of stalls
over a threshold. A reset is reported, never hidden.

    tcp_probe.py serve --bind ADDR --port P [--stall-ms 100]
    tcp_probe.py send --to ADDR --port P --duration S [--rate BYTES_PER_S] [--echo]

With ``--echo`` the far end is an echo server (a guest that runs nothing of the
bench's: ``nc -e cat``): the sender also reads the stream back and hashes it,
so one program sees both ends.

Each prints READY when it is set up (serve: listening; send: connected), and
one JSON line with its result when the stream ends (send: after --duration,
or SIGTERM; serve: at end of stream).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import socket
import sys
import threading
import time
from types import FrameType

CHUNK = 16384


def _pattern(index: int) -> bytes:
    """Chunk ``index`` of the stream: deterministic, and different for every chunk."""
    seed = hashlib.sha256(index.to_bytes(8, "big")).digest()
    return (seed * (CHUNK // len(seed) + 1))[:CHUNK]


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _emit(result: dict[str, object]) -> None:
    print(json.dumps(result), flush=True)


def serve(bind: str, port: int, stall_ms: float) -> int:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(1)
    print("READY", flush=True)
    conn, peer = listener.accept()
    digest = hashlib.sha256()
    total = stalls = 0
    longest = 0.0
    reset = False
    last = time.monotonic()
    try:
        while True:
            data = conn.recv(1 << 16)
            now = time.monotonic()
            if not data:
                break
            waited = (now - last) * 1000
            if total and waited > longest:
                longest = waited
            if total and waited > stall_ms:
                stalls += 1
            last = now
            total += len(data)
            digest.update(data)
    except ConnectionResetError:
        reset = True
    except _Stop:
        pass
    conn.close()
    listener.close()
    _emit(
        {
            "mode": "serve",
            "peer": peer[0],
            "bytes": total,
            "sha256": digest.hexdigest(),
            "longest_stall_ms": round(longest, 3),
            "stalls": stalls,
            "reset": reset,
        }
    )
    return 0


class _Echo:
    """Reads the echoed stream in a thread: bytes, hash, stalls, as ``serve`` counts them."""

    def __init__(self, conn: socket.socket, stall_ms: float) -> None:
        self.conn = conn
        self.stall_ms = stall_ms
        self.digest = hashlib.sha256()
        self.total = self.stalls = 0
        self.longest = 0.0
        self.reset = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        last = time.monotonic()
        try:
            while data := self.conn.recv(1 << 16):
                now = time.monotonic()
                waited = (now - last) * 1000
                if self.total:
                    self.longest = max(self.longest, waited)
                    self.stalls += waited > self.stall_ms
                last = now
                self.total += len(data)
                self.digest.update(data)
        except OSError:
            self.reset = True

    def result(self, timeout: float) -> dict[str, object]:
        self.thread.join(timeout)
        return {
            "echo_bytes": self.total,
            "echo_sha256": self.digest.hexdigest(),
            "longest_stall_ms": round(self.longest, 3),
            "stalls": self.stalls,
            "echo_reset": self.reset,
            "echo_complete": not self.thread.is_alive(),
        }


def send(
    to: str,
    port: int,
    duration: float,
    rate: float | None,
    *,
    echo: bool = False,
    stall_ms: float = 100.0,
) -> int:
    conn = socket.create_connection((to, port), timeout=10)
    conn.settimeout(None)
    reader = _Echo(conn, stall_ms) if echo else None
    print("READY", flush=True)
    digest = hashlib.sha256()
    total = index = 0
    reset = False
    error = ""
    started = time.monotonic()
    try:
        while time.monotonic() - started < duration:
            if rate:
                due = started + total / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            chunk = _pattern(index)
            conn.sendall(chunk)
            digest.update(chunk)
            total += len(chunk)
            index += 1
        conn.shutdown(socket.SHUT_WR)
        if reader is None:
            conn.recv(1)  # wait for the server to close: every byte was read
    except ConnectionResetError:
        reset = True
    except OSError as err:
        error = str(err)
    except _Stop:
        conn.shutdown(socket.SHUT_WR)
    echoed = reader.result(timeout=30.0) if reader is not None else {}
    conn.close()
    _emit(
        {
            "mode": "send",
            "bytes": total,
            "sha256": digest.hexdigest(),
            "elapsed_s": round(time.monotonic() - started, 3),
            "reset": reset,
            "error": error,
            **echoed,
        }
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve", help="accept one stream and hash what arrives")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--stall-ms", type=float, default=100.0)
    c = sub.add_parser("send", help="send a deterministic stream and hash what was sent")
    c.add_argument("--to", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--rate", type=float, default=None, help="bytes per second (default: max)")
    c.add_argument("--echo", action="store_true", help="the server echoes: read it back too")
    c.add_argument("--stall-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    if args.mode == "serve":
        return serve(args.bind, args.port, args.stall_ms)
    return send(
        args.to, args.port, args.duration, args.rate, echo=args.echo, stall_ms=args.stall_ms
    )


if __name__ == "__main__":
    sys.exit(main())
