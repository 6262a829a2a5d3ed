"""The vmxnet3 shell: the guest's one NIC driver, in passthrough through a plugin or in emulation.

Run as ``python -m drivers.shell --config FILE`` in the guest's network
namespace. The guest's netdev is a TAP the bench made; the shell is its only
queue: frames the guest's kernel sends are read from the TAP and posted on
the VF's rings (through the vendor plugin) or on the emulated vmxnet3 rings;
frames received on either are written back into the TAP. The netdev, its MAC
and its IP never change, whatever the data path does underneath.

The shell owns every buffer (``drivers.guest_memory``), so the hypervisor can
take the VF away at any moment; it follows the device's steps (``attach``,
``go``, ``hold``, ``detach``, ``vf-lost``; see ``nic_emulators.vmxnet3.device``)
and reports a stuck or lying plugin as a runtime error. It serves ``shell.sock``
for the guest-side view: counters, buffer accounting, plugin faults, reload.

Live migration moves the device under the shell: ``freeze`` stops the guest
(nothing is posted or reaped) for stop-and-copy, ``moved`` names the device
socket on the destination host, where the shell re-attaches (``hello`` with
``resume``) to the copied rings, and ``thaw`` resumes it on the source when a
migration fails. How fast the guest lets go of its VF when asked (``hold``)
is a lever for the tests (``vf-release``: at once, after a delay, never).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from drivers.emulated_path import EmulatedRings
from drivers.faulty_plugin import FAULTS, FaultyPlugin
from drivers.guest_memory import SMALL, BufferError_, GuestMemory
from drivers.plugin_api import PLAIN_SEND, TX_RING_FULL, Buffer, PluginRefused, RecvInfo, SgEntry
from drivers.plugin_loader import load_plugin
from drivers.tap import open_tap, tap_mtu
from drivers.vf_attachment import VfAttachment
from nic_emulators.config import ShellConfig, shm_name
from nic_emulators.control import Connection, ControlError, ControlServer
from nic_emulators.process_main import serve
from nic_emulators.vendors.engine import insert_vlan

IDLE_WAKE_S = 0.05
#: Longest wait for the emulation path's fence before VF receptions are taken anyway.
FENCE_WAIT_S = 0.2
TAP_BATCH = 64
RX_BUDGET = 256
COUNTERS = (
    "tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "tx_dropped", "rx_dropped",
    "vf_tx_packets", "vf_rx_packets", "emu_tx_packets", "emu_rx_packets", "tx_ring_full",
)  # fmt: skip


class Shell:
    def __init__(self, config: ShellConfig) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.memory = GuestMemory(
            shm_name(config.lab, config.guest, "mem"), config.small_buffers, config.large_buffers
        )
        self.tap = open_tap(config.tap)
        self.selector.register(self.tap, selectors.EVENT_READ, self._from_tap)
        self.tap_watched = True
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.vf_rx = self.vf_rx_bytes = 0  # folded into counters by _counters()
        #: Frames read from the TAP straight into guest buffers, not yet posted on a path.
        self.pending: deque[tuple[Buffer, int]] = deque()
        self.tx_path = "emu"  # emu | vf | hold | to-vf
        self.vf: VfAttachment | None = None
        self.plugin_fault: str | None = None
        self.installed: dict[str, str] = {}
        self.reload_next = False
        self.nic_fences = True
        self.vf_broken = False  # a runtime error: the plugin is not called until the VF is gone
        self.go_seq = 0
        self.rx_refill = True  # off: RX buffers are not given back to the VF (starvation tests)
        #: Frames longer than a small buffer need large ones (a TAP read never spans buffers).
        self.large_reads = tap_mtu(config.tap) + 18 > SMALL
        self.fence_target = 0
        self.fence_deadline = 0.0
        self.errors: list[str] = []
        self.next_id = 100
        #: Stopped by the hypervisor for stop-and-copy: nothing moves until moved or thawed.
        self.frozen = False
        #: How the guest answers a request to let go of its VF: normal | delay | never.
        self.release_mode = "normal"
        self.release_delay_s = 0.0
        #: A ``hold`` answered late (release_mode delay): (seq, when).
        self.pending_hold: tuple[int, float] | None = None
        self.vmx = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.vmx.connect(str(self.run_dir / "vmx.sock"))
        self.vmx_inbuf = b""
        hello = self._call_blocking(
            "hello", memory=self.memory.name, tap=config.tap, pid=os.getpid()
        )
        self.emu = EmulatedRings(
            hello["region"], hello["doorbell"], hello["interrupt"], self.memory
        )
        self.emu.post_rx()
        self.selector.register(self.emu.interrupt, selectors.EVENT_READ, self.emu.interrupt.drain)
        self.vmx.setblocking(False)
        self.selector.register(self.vmx, selectors.EVENT_READ, self._from_vmx)
        self.control = ControlServer(self.selector, self.run_dir / "shell.sock", self._handle)

    # -- talking to the device ------------------------------------------------

    def _call_blocking(self, op: str, **args: Any) -> dict[str, Any]:
        self.vmx.sendall((json.dumps({"id": 1, "op": op, **args}) + "\n").encode())
        self.vmx.settimeout(10)
        while True:
            while b"\n" not in self.vmx_inbuf:
                data = self.vmx.recv(65536)
                if not data:
                    raise ControlError(f"the device closed the connection during {op}", "EPIPE")
                self.vmx_inbuf += data
            line, self.vmx_inbuf = self.vmx_inbuf.split(b"\n", 1)
            reply = json.loads(line)
            if "event" not in reply:
                break
            self.vmx_inbuf = line + b"\n" + self.vmx_inbuf  # an early step: handled by the loop
            raise ControlError(f"{op}: the device sent a step before answering", "EPROTO")
        if not reply.get("ok"):
            raise ControlError(f"{op}: {reply.get('error')}", str(reply.get("code")))
        result: dict[str, Any] = reply["result"]
        return result

    def _send_vmx(self, op: str, to: socket.socket | None = None, **args: Any) -> None:
        """A request to the device (``to``: a device the shell has since moved away from)."""
        self.next_id += 1
        data = (json.dumps({"id": self.next_id, "op": op, **args}) + "\n").encode()
        sock = to or self.vmx
        if sock.fileno() < 0:
            return  # that device is gone: nobody waits for the answer
        sock.setblocking(True)
        try:
            sock.sendall(data)
        except OSError as err:
            print(f"device {op}: {err}", file=sys.stderr, flush=True)
        finally:
            sock.setblocking(False)

    def _from_vmx(self) -> None:
        try:
            data = self.vmx.recv(65536)
        except BlockingIOError:
            return
        if not data:
            print("device connection closed; stopping", file=sys.stderr, flush=True)
            self.stopping = True
            return
        self.vmx_inbuf += data
        while b"\n" in self.vmx_inbuf:
            line, self.vmx_inbuf = self.vmx_inbuf.split(b"\n", 1)
            message = json.loads(line)
            if "event" in message:
                self._device_step(message)

    def _device_step(self, message: dict[str, Any]) -> None:
        event, seq = message["event"], message.get("seq")
        answer: dict[str, Any] = {"ok": True}
        asked_by = self.vmx  # a step is answered to the device that asked, even after a move
        try:
            if event == "attach":
                answer = self._attach(message["info"])
            elif event == "go":
                # Answered once the emulated TX ring is empty (see _service): the device
                # then makes the NIC take in what the emulation path still carries.
                self.tx_path, self.go_seq = "to-vf", int(seq or 0)
                return
            elif event == "tx-on":
                self.tx_path = "vf" if self.vf is not None else "emu"
                self._transmit()
            elif event == "hold":
                if self.release_mode != "normal":  # a guest slow to let go, or never
                    if self.release_mode == "delay":
                        self.pending_hold = (int(seq or 0), time.monotonic() + self.release_delay_s)
                    return
                self.tx_path = "hold"
            elif event == "release-cancelled":
                self.pending_hold = None
                if self.vf is not None and self.tx_path == "hold":
                    self.tx_path = "vf"
                    self._transmit()
            elif event == "freeze":
                self.frozen = True
            elif event == "thaw":
                self.frozen = False
            elif event == "moved":
                answer = self._move_device(str(message["socket"]), int(seq or 0))
                if answer.get("ok"):
                    return  # answered on the old device's connection
            elif event == "detach":
                answer = self._detach(lost=False)
            elif event == "vf-lost":
                self.errors.append(f"VF lost: {message.get('reason')}")
                answer = self._detach(lost=True, drained=bool(message.get("drained")))
            else:
                return
        except Exception as err:  # answer the device whatever happens, or it waits for nothing
            answer = {"ok": False, "reason": f"{type(err).__name__}: {err}"}
            print(f"device step {event} failed: {answer['reason']}", file=sys.stderr, flush=True)
        if seq is not None:
            self._send_vmx("answer", seq=seq, **answer, to=asked_by)

    def _move_device(self, path: str, seq: int) -> dict[str, Any]:
        """Re-attach to the guest's device on its new host: the rings were copied there at
        stop-and-copy, so the shell's ring positions hold as they are."""
        new = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            new.connect(path)
        except OSError as err:
            new.close()
            return {"ok": False, "reason": f"cannot reach the new device at {path}: {err}"}
        old, old_inbuf = self.vmx, self.vmx_inbuf
        self.vmx, self.vmx_inbuf = new, b""
        try:
            hello = self._call_blocking(
                "hello", memory=self.memory.name, tap=self.config.tap, pid=os.getpid(), resume=True
            )
        except (ControlError, OSError, ValueError) as err:
            new.close()
            self.vmx, self.vmx_inbuf = old, old_inbuf
            return {"ok": False, "reason": f"the new device refused the guest: {err}"}
        self._send_vmx("answer", seq=seq, ok=True, to=old)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(old)
        self._let_go(old)
        self.vmx.setblocking(False)
        self.selector.register(self.vmx, selectors.EVENT_READ, self._from_vmx)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.emu.interrupt)
        self.emu.remap(hello["region"], hello["doorbell"], hello["interrupt"])
        self.selector.register(self.emu.interrupt, selectors.EVENT_READ, self.emu.interrupt.drain)
        self.frozen = False
        self._send_vmx("ready")
        print(f"device moved: now {path} (answered step {seq})", flush=True)
        return {"ok": True}

    @staticmethod
    def _let_go(old: socket.socket) -> None:
        """Close the connection to a device the guest left, without losing the last answer:
        a UNIX socket closed with unread data resets its peer, so what the old device still
        sent is read (and dropped) first, and the write side is shut before the close."""
        with contextlib.suppress(OSError):
            old.shutdown(socket.SHUT_WR)
            old.setblocking(False)
            while old.recv(65536):
                pass
        old.close()

    # -- passthrough ----------------------------------------------------------

    def _attach(self, info: dict[str, Any]) -> dict[str, Any]:
        if self.vf is not None:
            self._drop_vf()
        try:
            module = load_plugin(info, self.installed, reload=self.reload_next)
        except PluginRefused as err:
            self.errors.append(str(err))
            return {"ok": False, "reason": str(err)}
        self.reload_next = False
        table = (0, SMALL, self.memory.small_count)
        attachment = VfAttachment(info, module, self, table)
        if self.plugin_fault:
            attachment.plugin = FaultyPlugin(
                attachment.plugin, attachment.window, self.plugin_fault
            )
        self.vf = attachment
        # VF receptions wait until the emulation path delivered the NIC's fence
        # (the end of what it carried), so a switch never reorders frames.
        self.fence_target = self.emu.fences + 1 if self.nic_fences else self.emu.fences
        self.fence_deadline = time.monotonic() + FENCE_WAIT_S
        try:
            attachment.start(time.monotonic())
        except Exception:
            self._drop_vf()
            raise
        self.selector.register(
            attachment.interrupt, selectors.EVENT_READ, attachment.interrupt.drain
        )
        return {"ok": True, "plugin": info["plugin"], "features": sorted(attachment.features)}

    def _detach(self, lost: bool, drained: bool = False) -> dict[str, Any]:
        vf = self.vf
        if vf is None:
            self.tx_path = "emu"
            self._transmit()
            return {"ok": True, "note": "no VF attached"}
        unreported = 0
        if not lost:
            # what emulation received before the VF took over goes first: up to the fence
            while self.emu.fences < self.fence_target and self.emu.poll_rx(self._from_emu):
                pass
            with contextlib.suppress(Exception):  # a broken plugin must not stop the fallback
                for queue in range(vf.queues):
                    vf.plugin.check_tx_ring(queue)
                    while vf.plugin.check_rx_ring(queue, RX_BUDGET):
                        pass
            # The device was quiesced: what it did not complete was not sent (a link
            # down, a paused queue): those frames go out over emulation, first and in order.
            unreported = vf.in_flight()
            resend = [(self.memory.buffers[b], n) for frames in vf.outstanding for b, n in frames]
            for buffer, _ in resend:
                self.memory.move(buffer.id, "vf-tx", "pending")
            for frames in vf.outstanding:
                frames.clear()
            self.pending.extendleft(reversed(resend))
        elif drained:  # quiesced before it was dropped: what was posted went out
            unreported = vf.in_flight()
            for frames in vf.outstanding:
                while frames:
                    self._sent(frames.popleft(), "vf")
        else:
            unreported = vf.in_flight()
            self.counters["tx_dropped"] += unreported
        self._drop_vf()
        self.tx_path = "emu"
        self._transmit()
        return {"ok": True, "resent" if not lost else "dropped": unreported}

    def _drop_vf(self) -> None:
        vf, self.vf = self.vf, None
        self.vf_broken = False
        if vf is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(vf.interrupt)
        vf.close()
        self.memory.reclaim("vf-rx", "vf-tx")

    def _runtime_error(self, reason: str) -> None:
        """The plugin broke its contract: stop calling it and send over emulation now, and
        tell the device. The VF's buffers stay where they are until the device has
        quiesced the VF (``vf-lost``): it may still be reading them."""
        self.errors.append(reason)
        print(f"runtime error: {reason}", file=sys.stderr, flush=True)
        self.vf_broken = True
        self.tx_path = "emu"
        self._send_vmx("runtime-error", reason=reason)

    # -- shell services for the plugin ----------------------------------------

    def alloc_small_buffer(self) -> Buffer | None:
        return self.memory.take("vf-rx")

    def alloc_large_buffer(self) -> Buffer | None:
        return self.memory.take("vf-rx", large=True)

    def indicate_recv(self, buffer: Buffer, length: int, info: RecvInfo) -> None:
        # The hot path of passthrough reception: written out rather than shared.
        memory = self.memory
        addr = buffer.addr
        frame: Any = memory.view[addr : addr + length]
        if info.vlan is not None:
            frame = insert_vlan(bytes(frame), info.vlan)
        try:
            os.write(self.tap, frame)
        except OSError:
            self.counters["rx_dropped"] += 1
        else:
            self.vf_rx += 1
            self.vf_rx_bytes += length
        memory.give_back(buffer.id, "vf-rx")

    def complete_send(self, queue: int, count: int) -> None:
        vf = self.vf
        if vf is None:
            return
        outstanding = vf.outstanding[queue]
        if count > len(outstanding):
            raise BufferError_(
                f"plugin completed {count} frames on queue {queue}, {len(outstanding)} were out"
            )
        give_back, popleft = self.memory.give_back, outstanding.popleft
        nbytes = 0
        for _ in range(count):
            buffer_id, length = popleft()
            give_back(buffer_id, "vf-tx")
            nbytes += length
        counters = self.counters
        counters["tx_packets"] += count
        counters["tx_bytes"] += nbytes
        counters["vf_tx_packets"] += count
        vf.last_progress = time.monotonic()

    def log(self, level: str, message: str) -> None:
        print(f"plugin {level}: {message}", file=sys.stderr, flush=True)
        if level == "error":
            self.errors.append(message)

    # -- frames ---------------------------------------------------------------

    def _sent(self, item: tuple[int, int], path: str) -> None:
        buffer_id, length = item
        self.memory.give_back(buffer_id, f"{path}-tx")
        counters = self.counters
        counters["tx_packets"] += 1
        counters["tx_bytes"] += length
        counters[f"{path}_tx_packets"] += 1

    def _to_tap(self, buffer: Buffer, length: int, vlan: int | None, path: str) -> None:
        frame: Any = self.memory.view[buffer.addr : buffer.addr + length]
        if vlan is not None:
            frame = insert_vlan(bytes(frame), vlan)
        try:
            os.write(self.tap, frame)
        except OSError:
            self.counters["rx_dropped"] += 1
            return
        counters = self.counters
        counters["rx_packets"] += 1
        counters["rx_bytes"] += length
        counters[f"{path}_rx_packets"] += 1

    def _counters(self) -> dict[str, int]:
        counters = self.counters
        if self.vf_rx:
            counters["rx_packets"] += self.vf_rx
            counters["vf_rx_packets"] += self.vf_rx
            counters["rx_bytes"] += self.vf_rx_bytes
            self.vf_rx = self.vf_rx_bytes = 0
        return dict(counters)

    def _from_emu(self, buffer: Buffer, length: int) -> None:
        self._to_tap(buffer, length, None, "emu")

    def _from_tap(self) -> int:
        """Read what the guest sent straight into guest buffers (no copy), then post it;
        returns how many frames were read."""
        if self.frozen:  # stopped for stop-and-copy: the rings are being copied
            return 0
        pending = self.pending
        room = TAP_BATCH - len(pending)
        if room <= 0:
            return 0  # backpressure: the TAP's own queue holds the rest
        read = 0
        memory, readv, tap = self.memory, os.readv, self.tap
        take, view, large = memory.take, memory.view, self.large_reads
        for _ in range(room):
            buffer = take("pending", large)
            if buffer is None:
                break
            addr = buffer.addr
            try:
                length = readv(tap, [view[addr : addr + buffer.size]])
            except BlockingIOError:
                memory.give_back(buffer.id, "pending")
                break
            pending.append((buffer, length))
            read += 1
        self._transmit()
        return read

    def _watch_tap(self, wanted: bool) -> None:
        """Listen to the TAP only while there is room for what it has (else backpressure)."""
        if wanted != self.tap_watched:
            if wanted:
                self.selector.register(self.tap, selectors.EVENT_READ, self._from_tap)
            else:
                self.selector.unregister(self.tap)
            self.tap_watched = wanted

    def _transmit(self) -> None:
        if not self.pending or self.frozen:
            return
        path = self.tx_path
        if path == "vf" and self.vf is not None:
            self._transmit_vf(self.vf)
        elif path == "emu":
            self._transmit_emu()

    def _transmit_vf(self, vf: VfAttachment) -> None:
        pending, move, plugin = self.pending, self.memory.move, vf.plugin
        outstanding = vf.outstanding[0]  # one TX queue: the guest's frames stay in order
        try:
            if not outstanding:
                vf.last_progress = time.monotonic()
            while pending:
                buffer, length = pending[0]
                last = len(pending) == 1
                if (
                    plugin.add_frame_to_tx_ring(0, PLAIN_SEND, [SgEntry(buffer, length)], last)
                    == TX_RING_FULL
                ):
                    self.counters["tx_ring_full"] += 1
                    if not plugin.check_tx_ring(0):
                        break
                    continue
                move(buffer.id, "pending", "vf-tx")
                outstanding.append((buffer.id, length))
                pending.popleft()
        except Exception as err:  # the plugin broke: contain it
            self._runtime_error(f"plugin failed while sending: {type(err).__name__}: {err}")

    def _transmit_emu(self) -> None:
        pending, move, emu = self.pending, self.memory.move, self.emu
        sent = 0
        while pending:
            buffer, length = pending[0]
            if not emu.send(buffer, length):
                emu.flush()
                if not emu.reclaim(self._emu_sent):
                    break
                continue
            move(buffer.id, "pending", "emu-tx")
            pending.popleft()
            sent += 1
        if sent:
            emu.flush()

    def _emu_sent(self, buffer_id: int, length: int) -> None:
        self._sent((buffer_id, length), "emu")

    # -- the loop -------------------------------------------------------------

    def _service(self) -> bool:
        """Poll every ring once; True if frames moved that may have more behind them.

        TX completions alone do not count: a guest sending faster than the VF
        drains waits for the completion interrupt instead of spinning (the
        spinning would take the very CPU the device needs to drain the ring).
        """
        received = 0
        vf = self.vf
        emu = self.emu
        if vf is not None and emu.fences < self.fence_target:
            received += emu.poll_rx(self._from_emu)
            if emu.fences < self.fence_target and time.monotonic() > self.fence_deadline:
                self.errors.append("no fence from the emulation path; taking VF receptions anyway")
                self.fence_target = emu.fences
        if vf is not None and not self.vf_broken:
            fenced = emu.fences < self.fence_target
            try:
                plugin = vf.plugin
                for queue in range(vf.queues):
                    if not fenced:
                        while (got := plugin.check_rx_ring(queue, RX_BUDGET)) == RX_BUDGET:
                            received += got
                        received += got
                    if self.rx_refill:
                        plugin.add_buffers_to_rx_ring(queue)
                    plugin.check_tx_ring(queue)
            except Exception as err:
                self._runtime_error(f"plugin failed: {type(err).__name__}: {err}")
            else:
                self._watchdog(vf)
        received += emu.poll_rx(self._from_emu)
        emu.reclaim(self._emu_sent)
        if self.tx_path == "to-vf" and emu.tx_idle():
            self.tx_path = "hold"
            self._send_vmx("answer", seq=self.go_seq, ok=True)
        before = len(self.pending)
        if before:
            self._transmit()
        read = self._from_tap() if len(self.pending) < TAP_BATCH else 0
        return received > 0 or read > 0 or len(self.pending) < before

    def _watchdog(self, vf: VfAttachment) -> None:
        if (
            vf.in_flight()
            and time.monotonic() - vf.last_progress > self.config.tx_timeout_ms / 1000
        ):
            self._runtime_error(
                f"TX timeout: {vf.in_flight()} frames outstanding on the VF with no completion "
                f"for {self.config.tx_timeout_ms} ms"
            )

    def _arm(self) -> float:
        """Enable interrupts before sleeping; re-poll so nothing that raced in is left waiting."""
        if self.vf is not None:
            with contextlib.suppress(Exception):
                self.vf.plugin.enable_interrupt(0)
        self.emu.enable_interrupt()
        if self._service():
            return 0.0
        if self.vf is not None and self.vf.in_flight():
            return min(IDLE_WAKE_S, self.config.tx_timeout_ms / 4000)
        return IDLE_WAKE_S

    def run(self) -> None:
        print("READY", flush=True)
        self._send_vmx("ready")
        select = self.selector.select
        timeout = 0.0
        while not self.stopping:
            self._watch_tap(not self.frozen and len(self.pending) < TAP_BATCH)
            registered = self.selector.get_map()
            for key, _ in select(timeout):
                if registered.get(key.fd) is key:  # not unregistered by an earlier callback
                    key.data()
            if self.pending_hold is not None and time.monotonic() >= self.pending_hold[1]:
                seq, self.pending_hold = self.pending_hold[0], None
                self.tx_path = "hold"
                self._send_vmx("answer", seq=seq, ok=True)
            if self.frozen:  # stopped for stop-and-copy: only the device's steps are heard
                timeout = IDLE_WAKE_S
            elif self._service():
                timeout = 0.0
            else:
                timeout = self._arm()
            if self.pending_hold is not None:
                timeout = min(timeout, max(0.0, self.pending_hold[1] - time.monotonic()))

    # -- guest-side control ---------------------------------------------------

    def _handle(
        self, conn: Connection, request_id: int, op: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        del conn, request_id
        if op == "status":
            vf = self.vf
            return {
                "guest": self.config.guest,
                "tap": self.config.tap,
                "tx_path": self.tx_path,
                "plugin": vf.info["plugin"] if vf else None,
                "features": sorted(vf.features) if vf else [],
                "in_flight": vf.in_flight() if vf else 0,
                "counters": self._counters(),
                "buffers": self.memory.audit(),
                "errors": self.errors[-20:],
                "plugin_fault": self.plugin_fault,
                "frozen": self.frozen,
                "vf_release": self.release_mode,
                "installed": dict(self.installed),
            }
        if op == "plugin-fault":
            fault = args.get("fault")
            if fault is not None and fault not in FAULTS:
                raise ControlError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}", "EINVAL")
            self.plugin_fault = fault
            if self.vf is not None:
                inner = getattr(self.vf.plugin, "inner", self.vf.plugin)
                self.vf.plugin = FaultyPlugin(inner, self.vf.window, fault) if fault else inner
            return {"fault": fault}
        if op == "vf-release":
            mode = str(args.get("mode", "normal"))
            if mode not in ("normal", "delay", "never"):
                raise ControlError(f"vf-release mode {mode!r}? (normal, delay, never)", "EINVAL")
            self.release_mode, self.release_delay_s = mode, float(args.get("delay_ms", 0)) / 1000
            return {"vf_release": mode, "delay_ms": self.release_delay_s * 1000}
        if op == "rx-refill":
            self.rx_refill = bool(args.get("on", True))
            return {"rx_refill": self.rx_refill}
        if op == "install-plugin":
            name, module = str(args["name"]), args.get("module")
            if module:
                self.installed[name] = str(module)
            else:
                self.installed.pop(name, None)
            return {"installed": dict(self.installed)}
        if op == "reload-plugin":
            self.reload_next = True
            self._send_vmx("reload")
            return {"requested": True}
        raise ControlError(f"unknown operation {op!r}", "EINVAL")

    def close(self) -> None:
        self._drop_vf()
        self.control.close()
        with contextlib.suppress(OSError):
            self.vmx.close()
        self.emu.close()
        os.close(self.tap)
        self.memory.close()


def main(argv: list[str] | None = None) -> int:
    return serve("python -m drivers.shell", __doc__, ShellConfig, Shell, argv)


if __name__ == "__main__":
    sys.exit(main())
