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
and reports a stuck or lying plugin as a runtime error
(``drivers.shell_passthrough``). It serves ``shell.sock`` for the guest-side
view: counters, buffer accounting, plugin faults, reload
(``drivers.shell_control``). Frames move in ``drivers.shell_frames``.

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
from drivers.guest_memory import SMALL, GuestMemory
from drivers.plugin_api import Buffer
from drivers.shell_control import GuestControl
from drivers.shell_frames import TAP_BATCH, FramePaths
from drivers.shell_passthrough import RX_BUDGET, PassthroughPath
from drivers.tap import open_tap, tap_mtu
from drivers.vf_attachment import VfAttachment
from nic_emulators.config import ShellConfig, shm_name
from nic_emulators.control import ControlError, ControlServer
from nic_emulators.process_main import serve

IDLE_WAKE_S = 0.05
#: While frames keep moving, the shell looks at its sockets (the device's steps, the
#: guest-side control) and drains its interrupt notifications once every this many
#: passes: the rings and the TAP are polled by every pass anyway, and a pass costs a
#: third less without the ``epoll_wait`` (py-spy: ~12% of the shell's time in
#: passthrough at 150,000 frames/s went to it, a few frames a pass). While the VF's RX
#: ring fills after an attach (a switch to passthrough under way) every pass looks: the
#: device's next step is what the guest's frames wait for.
BUSY_PASSES_PER_SELECT = 4
#: A busy pass that moved fewer frames than this waits COALESCE_S before the next one,
#: as a NIC's interrupt moderation does: frames gather in the TAP's queue and the rings,
#: and the next pass moves them for one pass's cost (a pass costs about as much as a
#: few frames). At most 50 us more latency; measured on the 2-core dev VM (RFC 2544,
#: passthrough): guest->generator 150,000 -> 192,000-194,000 frames/s, generator->guest
#: 154,000 -> 181,000, emulation unchanged (122,500 / 91,000).
COALESCE_BELOW = 8
COALESCE_S = 50e-6
COUNTERS = (
    "tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "tx_dropped", "rx_dropped",
    "vf_tx_packets", "vf_rx_packets", "emu_tx_packets", "emu_rx_packets", "tx_ring_full",
)  # fmt: skip


class Shell(FramePaths, PassthroughPath, GuestControl):
    """The guest's driver: its device connection and steps, and the loop serving both paths
    (frames: ``drivers.shell_frames``; passthrough and the plugin's services:
    ``drivers.shell_passthrough``; ``shell.sock``: ``drivers.shell_control``)."""

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
        self.tx_path = "emu"  # emu | vf | hold | to-vf (the TX fence waits for ring room)
        self.vf: VfAttachment | None = None
        self.plugin_fault: str | None = None
        self.installed: dict[str, str] = {}
        self.reload_next = False
        self.nic_fences = True
        self.vf_broken = False  # a runtime error: the plugin is not called until the VF is gone
        self.broken_hold_until = 0.0  # ... and the guest's frames wait until then at most
        self.go_seq = 0
        self.rx_refill = True  # off: RX buffers are not given back to the VF (starvation tests)
        #: The last pass posted RX buffers to the VF (a plugin posts a budget a call, so
        #: a ring fills over a few passes after an attach or a starvation).
        self.vf_rx_refilling = False
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
                # The guest's TX moves to the VF behind a fence (answered in _fence_tx).
                self.tx_path, self.go_seq = "to-vf", int(seq or 0)
                self._fence_tx()
                return
            elif event == "hold":
                if self.release_mode != "normal":  # a guest slow to let go, or never
                    if self.release_mode == "delay":
                        self.pending_hold = (int(seq or 0), time.monotonic() + self.release_delay_s)
                    return
                self.tx_path = "hold"
            elif event == "release-cancelled":
                self.pending_hold = None
                if self.vf is not None and self.tx_path == "hold" and not self.vf_broken:
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
                answer = self._detach(
                    lost=True,
                    drained=bool(message.get("drained")),
                    left=int(message.get("left") or 0),
                )
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

    # -- the loop -------------------------------------------------------------

    def _service(self) -> int:
        """Poll every ring once; how many frames moved (0: none that may have more behind
        them; a ring still filling counts as one).

        TX completions alone do not count: a guest sending faster than the VF
        drains waits for the completion interrupt instead of spinning (the
        spinning would take the very CPU the device needs to drain the ring).
        """
        received = 0
        refilling = False
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
                    got = RX_BUDGET
                    while got == RX_BUDGET:  # buffers go back after each batch, as NAPI does
                        got = 0 if fenced else plugin.check_rx_ring(queue, RX_BUDGET)
                        received += got
                        if self.rx_refill:
                            # a ring still filling (posted in budgets) is work to come back to
                            refilling |= bool(plugin.add_buffers_to_rx_ring(queue))
                    plugin.check_tx_ring(queue)
            except Exception as err:
                self._runtime_error(f"plugin failed: {type(err).__name__}: {err}")
            else:
                self._watchdog(vf)
        self.vf_rx_refilling = refilling
        received += emu.poll_rx(self._from_emu)
        emu.reclaim(self._emu_sent)
        if self.tx_path == "to-vf":
            self._fence_tx()
        before = len(self.pending)
        if before:
            self._transmit()
        read = self._from_tap() if len(self.pending) < TAP_BATCH else 0
        return received + read + max(0, before - len(self.pending)) + refilling

    def _fence_tx(self) -> None:
        """Move the guest's TX to the VF at once, behind a fence on the emulated TX ring.

        The fence reaches the NIC after every frame the guest posted before it, and
        the NIC takes nothing from the VF's TX rings until it has (VF_ACTIVATE with
        ``tx_fence``), so the guest never waits for the emulation path to drain. With
        the emulated ring full, the guest's frames wait for room, on the next passes.
        """
        if not self.emu.send_fence():
            return
        self.emu.flush()
        self.tx_path = "vf" if self.vf is not None else "emu"
        self._send_vmx("answer", seq=self.go_seq, ok=True)
        self._transmit()

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
        busy_passes = 0
        while not self.stopping:
            if (
                timeout == 0.0
                and busy_passes < BUSY_PASSES_PER_SELECT - 1
                and not self.vf_rx_refilling  # a switch is on: hear the device every pass
            ):
                busy_passes += 1
            else:
                busy_passes = 0
                self._watch_tap(not self.frozen and len(self.pending) < TAP_BATCH)
                registered = self.selector.get_map()
                for key, _ in select(timeout):
                    if registered.get(key.fd) is key:  # not unregistered by an earlier callback
                        key.data()
            if self.pending_hold is not None and time.monotonic() >= self.pending_hold[1]:
                seq, self.pending_hold = self.pending_hold[0], None
                self.tx_path = "hold"
                self._send_vmx("answer", seq=seq, ok=True)
            if (
                self.vf_broken
                and self.tx_path == "hold"
                and time.monotonic() >= self.broken_hold_until
            ):  # the device never answered the runtime error: emulation, as things are
                self.tx_path = "emu"
                self._transmit()
            if self.frozen:  # stopped for stop-and-copy: only the device's steps are heard
                timeout = IDLE_WAKE_S
            elif moved := self._service():
                timeout = 0.0
                if moved < COALESCE_BELOW:
                    time.sleep(COALESCE_S)
            else:
                timeout = self._arm()
            if self.pending_hold is not None:
                timeout = min(timeout, max(0.0, self.pending_hold[1] - time.monotonic()))

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
