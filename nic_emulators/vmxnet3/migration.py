"""Live migration of one guest's vmxnet3 device from its host to another: both ends.

A guest's device (its rings, registers and port settings) moves; the guest
itself — its network namespace, kernel stack, open TCP connections and the
shell with the guest memory it owns — stays where it is, as a VM's memory and
vCPUs do from the guest's point of view. The sequence follows a hypervisor's:

1. source, passthrough -> emulation (``to_emulation``): the VF cannot follow
   the guest, so the guest lets go of it first (QUIESCE, detach, SAVE_STATE,
   RELEASE); bounded by ``release_timeout_s``, else the migration is refused;
2. pre-copy: the device's state (port configuration as the source NIC holds
   it, filters, counters, the ring region) is streamed to the destination
   device over TCP on the management network;
3. stop-and-copy: the guest is stopped (the shell ``freeze`` step: it posts
   and reaps nothing more), the ring region and the device's ring positions
   are copied again, and the destination loads them;
4. hand-over: the shell is told where its device now is (``moved``) and
   re-attaches there; the destination announces the guest (RARP) so the lab
   switch learns its new port, and offers it a VF of its own NIC.

Cancel or a failure before the hand-over puts the guest back where it was:
running on the source, in passthrough again if it was. A cancel takes effect
at once while the guest is being asked to let go of its VF, else at the next
stage; once the guest's driver is re-attaching to the destination it is too
late, and the migration completes. The stream is framed
messages: a 4-byte length, a JSON header naming ``bytes`` of payload after it.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from nic_emulators.control import ControlError
from nic_emulators.vmxnet3.device import DeviceModel, Sequence, SwitchFailed, fail
from nic_emulators.vmxnet3.layout import REGION_BYTES

HEADER = struct.Struct("!I")
#: Longest a header may be (a corrupt stream is refused, not allocated).
MAX_HEADER = 1 << 20
#: How long the source waits for the destination to connect or answer.
STREAM_TIMEOUT_S = 5.0
#: How long the guest's driver may take to re-attach (more than its own 10 s hello wait).
MOVE_TIMEOUT_S = 15.0

Record = Callable[..., None]


class MigrationCancelled(SwitchFailed):
    """Raised into the source's sequence by ``cancel``."""


def send_message(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps({**header, "bytes": len(payload)}).encode()
    sock.sendall(HEADER.pack(len(data)) + data + payload)


class MessageReader:
    """Turns the bytes of a stream into (header, payload) messages as they complete."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        self.buffer += data
        messages = []
        while len(self.buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self.buffer)
            if size > MAX_HEADER:
                raise ValueError(f"migration stream: a {size}-byte header (corrupt stream)")
            if len(self.buffer) < HEADER.size + size:
                break
            header = json.loads(bytes(self.buffer[HEADER.size : HEADER.size + size]))
            start = HEADER.size + size
            end = start + int(header.get("bytes", 0))
            if len(self.buffer) < end:
                break
            messages.append((header, bytes(self.buffer[start:end])))
            del self.buffer[:end]
        return messages


def receive_message(sock: socket.socket, timeout: float) -> tuple[dict[str, Any], bytes]:
    """One message, waiting at most ``timeout``; ConnectionError if the peer went away."""
    reader = MessageReader()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer from the destination within {timeout:g} s")
        sock.settimeout(remaining)
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the destination closed the migration stream")
        messages = reader.feed(data)
        if messages:
            return messages[0]


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class OutgoingMigration:
    """The source's side: a device sequence (run by ``DeviceModel.start``).

    ``state()`` gives the device state the destination needs (as JSON) and
    ``region()`` a copy of the ring region; ``stop(True)`` makes the process
    stop moving frames (the guest is stopped), ``stop(False)`` resumes it.
    """

    def __init__(
        self,
        device: DeviceModel,
        record: Record,
        state: Callable[[], dict[str, Any]],
        region: Callable[[], bytes],
        stop: Callable[[bool], None],
        *,
        events: Callable[[], list[dict[str, Any]]],
        moved_away: Callable[[], bool],
        target: str,
        dest_socket: str,
        release_timeout_s: float,
    ) -> None:
        self.device = device
        self.record = record
        self.state = state
        self.region = region
        self.stop = stop
        self.events = events
        self.moved_away = moved_away
        self.target = target
        self.dest_socket = dest_socket
        self.release_timeout_s = release_timeout_s
        self.cancelled = False
        self.handed_over = False
        self.stream: socket.socket | None = None

    def cancel(self) -> None:
        """Abandon the migration: at once while the guest is asked to let go of its VF,
        else at its next stage boundary (a copy or a hand-over in flight is not cut)."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.device.waiting_event == "hold":
            self.device.interrupt(MigrationCancelled("migration cancelled"))

    def _check_cancel(self) -> None:
        if self.cancelled:
            raise MigrationCancelled("migration cancelled")

    def sequence(self) -> Sequence:
        device = self.device
        was_passthrough = device.mode == "passthrough"
        self.record("migration-start", target=self.target, mode=device.mode)
        if was_passthrough:
            yield from self._release_vf()
        try:
            self._check_cancel()
            yield from self._copy_and_hand_over()
        except (SwitchFailed, ControlError, OSError, ValueError) as err:
            self._close_stream()
            cancelled = isinstance(err, MigrationCancelled)
            self.record("migration-cancelled" if cancelled else "migration-failed", reason=str(err))
            if was_passthrough and device.inactive_reason() is None:
                self.record("rollback", reason="back to passthrough on the source")
                try:
                    yield from device.to_passthrough()
                except SwitchFailed as again:
                    self.record("passthrough-failed", reason=str(again))
            if cancelled:
                raise
            raise SwitchFailed(f"migration failed: {err}") from None
        self._close_stream()

    def _release_vf(self) -> Sequence:
        """Passthrough -> emulation on the source, within ``release_timeout_s``."""
        device = self.device
        self.record("vf-release-requested", vf=device.vf, timeout_s=self.release_timeout_s)
        started = time.monotonic()
        device.next_step_timeout_s = self.release_timeout_s
        try:
            yield from device.to_emulation("migration")
        except (SwitchFailed, ControlError) as err:
            # The guest did not let go of its VF (or the migration was cancelled while it
            # was being asked to): it keeps running in passthrough on the source.
            answer = yield ("release-cancelled", {"reason": str(err)})
            del answer
            if device.vf is not None and device.vf_quiesced:
                # Past QUIESCE the guest may have dropped the VF already: finish the fallback
                # cleanly, then take a VF again (never re-activate one nobody may poll).
                yield from device.vf_lost(f"migration aborted: {err}", release=True, drained=True)
                try:
                    yield from device.to_passthrough()
                except SwitchFailed as again:
                    self.record("passthrough-failed", reason=str(again))
            kind = "migration-cancelled" if isinstance(err, MigrationCancelled) else "rollback"
            self.record(kind, reason=f"VF not released: {err}")
            if isinstance(err, MigrationCancelled):
                raise
            raise SwitchFailed(
                f"the guest did not release its VF within {self.release_timeout_s:g} s "
                f"(vf_release_timeout_s): {err}"
            ) from None
        self.record("vf-release-done", waited_ms=round((time.monotonic() - started) * 1000, 3))

    def _copy_and_hand_over(self) -> Sequence:
        host, port = parse_address(self.target)
        self.stream = socket.create_connection((host, port), timeout=STREAM_TIMEOUT_S)
        self.stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Pre-copy: everything, while the guest runs on.
        self.record("precopy-start")
        region = self.region()
        send_message(self.stream, {"type": "precopy", "state": self.state()}, region)
        self.record("precopy-done", bytes=len(region))
        self._check_cancel()
        # Stop-and-copy: the guest stops; what changed since is copied again.
        try:
            answer = yield ("freeze", {})
            if not answer.get("ok"):
                fail(f"the guest could not be stopped: {answer.get('reason')}")
            self.stop(True)
            self.record("stop-and-copy-start")
            send_message(self.stream, {"type": "final", "state": self.state()}, self.region())
            reply, _ = receive_message(self.stream, STREAM_TIMEOUT_S)
            if reply.get("type") != "loaded":
                fail(f"the destination refused the state: {reply.get('reason')}")
            self.record("stop-and-copy-end")
            self.device.next_step_timeout_s = MOVE_TIMEOUT_S
            answer = yield ("moved", {"socket": self.dest_socket})
            if not answer.get("ok"):
                fail(f"the guest could not reach its new device: {answer}")
        except BaseException:
            if self.moved_away():  # its driver re-attached there after all: it is gone
                self._handed_over("the guest's driver moved without confirming")
                return
            self.stop(False)
            self.record("guest-resumed-on-source")
            thawed = yield ("thaw", {})
            del thawed
            raise
        self._handed_over("")

    def _handed_over(self, note: str) -> None:
        """The guest runs on the destination: it gets the rest of the event log, the
        source keeps nothing of the guest (the stream is only courtesy from here on)."""
        self.handed_over = True
        self.record("handed-over", destination=self.target, **({"note": note} if note else {}))
        if self.stream is not None:
            with contextlib.suppress(OSError):
                send_message(self.stream, {"type": "done", "events": self.events()})

    def _close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class IncomingMigration:
    """The destination's side: takes the stream, loads the device state it carries.

    ``load(header_state, region, final)`` installs state in the process; an
    injected failure (``fail``) refuses the final state, as a destination
    that cannot start the guest does.
    """

    def __init__(
        self,
        selector: selectors.BaseSelector,
        address: str,
        load: Callable[[dict[str, Any], bytes, bool], None],
        record: Record,
        *,
        fail: bool = False,
        events: Callable[[list[dict[str, Any]]], None] = lambda events: None,
    ) -> None:
        host, port = parse_address(address)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(1)
        self.listener.setblocking(False)
        self.selector = selector
        selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self.address = f"{host}:{self.listener.getsockname()[1]}"
        self.load = load
        self.record = record
        self.events = events
        self.fail = fail
        self.stream: socket.socket | None = None
        self.reader = MessageReader()
        #: waiting | precopied | loaded | done | failed | aborted
        self.state = "waiting"

    def _accept(self) -> None:
        try:
            stream, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.stream is not None:  # one migration per destination
            stream.close()
            return
        self.stream = stream
        stream.setblocking(False)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.selector.register(stream, selectors.EVENT_READ, self._read)
        self.record("incoming-connected")

    def _read(self) -> None:
        assert self.stream is not None
        try:
            data = self.stream.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            if self.state not in ("done", "failed"):
                self.state = "aborted"
                self.record("incoming-aborted", reason="the source closed the stream")
            self.close_stream()
            return
        try:
            for header, payload in self.reader.feed(data):
                self._message(header, payload)
        except Exception as err:  # a state it cannot install: say so, never die of it
            self._refuse(f"{type(err).__name__}: {err}")

    def _message(self, header: dict[str, Any], payload: bytes) -> None:
        kind = header.get("type")
        assert self.stream is not None
        if kind in ("precopy", "final") and len(payload) != REGION_BYTES:
            self._refuse(f"a {len(payload)}-byte region (expected {REGION_BYTES})")
        elif kind == "precopy":
            self.load(header["state"], payload, False)
            self.state = "precopied"
            self.record("precopy-received", bytes=len(payload))
        elif kind == "final" and self.fail:
            self._refuse("failure injected at the destination (fail_incoming)")
        elif kind == "final":
            self.load(header["state"], payload, True)
            self.state = "loaded"
            self.record("state-loaded", bytes=len(payload))
            self.stream.setblocking(True)
            send_message(self.stream, {"type": "loaded"})
            self.stream.setblocking(False)
        elif kind == "done":
            self.state = "done"
            self.events(list(header.get("events", [])))
        else:
            self._refuse(f"unexpected message {kind!r}")

    def _refuse(self, reason: str) -> None:
        self.state = "failed"
        self.record("incoming-failed", reason=reason)
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.setblocking(True)
                send_message(self.stream, {"type": "error", "reason": reason})
                self.stream.setblocking(False)

    def close_stream(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.stream)
            self.stream.close()
            self.stream = None

    def close_listener(self) -> None:
        """No second migration stream: the guest has arrived."""
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()

    def close(self) -> None:
        self.close_stream()
        self.close_listener()
