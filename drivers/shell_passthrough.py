"""The shell's passthrough: attaching a VF through its plugin, letting go of it, and the
shell services the plugin calls (ARCHITECTURE.md: the NPA plugin interface).

Part of ``drivers.shell``. The shell owns every buffer: the plugin only ever
holds buffers the shell lent it, and a detach takes them all back (what was
posted to send and not completed is sent again over emulation, first and in
order). A plugin that breaks its contract is a runtime error: it is not
called again, and the device is told.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
import time
from typing import Any

from drivers.faulty_plugin import FaultyPlugin
from drivers.guest_memory import SMALL, BufferError_
from drivers.plugin_api import Buffer, PluginRefused, RecvInfo
from drivers.plugin_loader import load_plugin
from drivers.shell_state import ShellState
from drivers.vf_attachment import VfAttachment
from nic_emulators.vendors.engine import insert_vlan

#: Longest wait for the emulation path's fence before VF receptions are taken anyway.
FENCE_WAIT_S = 0.2
#: After a runtime error, how long the guest's frames wait for the device's ``vf-lost``.
BROKEN_HOLD_S = 1.0
RX_BUDGET = 256


class PassthroughPath(ShellState):
    """The VF through its plugin: attach, detach, and the shell services."""

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

    def _detach(self, lost: bool, drained: bool = False, left: int = 0) -> dict[str, Any]:
        vf = self.vf
        if vf is None:
            self.tx_path = "emu"
            self._transmit()
            return {"ok": True, "note": "no VF attached"}
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
            outcome = {"resent": self._settle_outstanding(vf, went=0)}
        elif drained:  # quiesced before it was dropped: what was posted went out,
            went = max(vf.in_flight() - left, 0)  # but for the last ``left``
            outcome = {"sent": went, "resent": self._settle_outstanding(vf, went)}
        else:
            unreported = vf.in_flight()
            self.counters["tx_dropped"] += unreported
            outcome = {"dropped": unreported}
        # The guest's frames move again before the VF's buffers are taken back: the VF is
        # quiesced, so nothing of it is in their way, and the reclaim need not be waited on.
        self.tx_path = "emu"
        self._transmit()
        self._drop_vf()
        return {"ok": True, **outcome}

    def _settle_outstanding(self, vf: VfAttachment, went: int) -> int:
        """The VF's outstanding frames, oldest first: the first ``went`` count as sent,
        the rest go back to the front of ``pending``, in order, for emulation. Returns
        how many go back."""
        resend = []
        for frames in vf.outstanding:
            while frames:
                item = frames.popleft()
                if went > 0:
                    self._sent(item, "vf")
                    went -= 1
                else:
                    resend.append((self.memory.buffers[item[0]], item[1]))
                    self.memory.move(item[0], "vf-tx", "pending")
        self.pending.extendleft(reversed(resend))
        return len(resend)

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
        # Hold the guest's frames until the device has quiesced the VF and said which of
        # the posted ones went out (``vf-lost``): those it left go first, then these, in
        # order. A device that says nothing within BROKEN_HOLD_S gets them over emulation.
        self.tx_path = "hold"
        self.broken_hold_until = time.monotonic() + BROKEN_HOLD_S
        self._send_vmx("runtime-error", reason=reason)

    # -- shell services for the plugin ----------------------------------------

    def alloc_small_buffer(self) -> Buffer | None:
        return self.memory.take("vf-rx")

    def alloc_small_buffers(self, count: int) -> list[Buffer]:
        return self.memory.take_many("vf-rx", count)

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
        nbytes = self.memory.give_back_sent(outstanding, count, "vf-tx")
        counters = self.counters
        counters["tx_packets"] += count
        counters["tx_bytes"] += nbytes
        counters["vf_tx_packets"] += count
        vf.last_progress = time.monotonic()

    def log(self, level: str, message: str) -> None:
        print(f"plugin {level}: {message}", file=sys.stderr, flush=True)
        if level == "error":
            self.errors.append(message)
