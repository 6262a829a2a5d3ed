"""The shell's frames: from the TAP onto the path in use, and from either path into the TAP.

Part of ``drivers.shell`` (the ``Shell`` class is made of this and its other
parts). A frame the guest sends is read from the TAP straight into a guest
buffer (no copy) and waits in ``pending`` until it is posted on the VF's
rings (through the plugin) or on the emulated vmxnet3 rings, whichever path
``tx_path`` names; a frame received on either path is written into the TAP.
Counters are the guest's: continuous across switches.
"""

from __future__ import annotations

import os
import selectors
import time
from typing import Any

from drivers.guest_memory import CODE
from drivers.plugin_api import PLAIN_SEND, TX_RING_FULL, Buffer, SgEntry
from drivers.shell_state import ShellState
from drivers.vf_attachment import VfAttachment
from nic_emulators.vendors.engine import insert_vlan

#: Frames read from the TAP and not yet posted, at most (beyond: the TAP's own queue holds them).
TAP_BATCH = 64


class FramePaths(ShellState):
    """Frames between the TAP and the path in use, and the guest's counters."""

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
        read = self.memory.read_frames(self.tap, room, "pending", self.large_reads, pending)
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
        """Post what is pending on the VF's TX ring, in order, until the ring is full.

        The guest's hot send path in passthrough, so written for speed: one pass over
        ``pending`` and one bulk removal of what was posted, the buffer's move to
        ``vf-tx`` as ``GuestMemory.move`` does it, and each frame's ``SgEntry`` made
        with ``tuple.__new__`` (a NamedTuple's own ``__new__`` is a Python function)."""
        pending, plugin = self.pending, vf.plugin
        state, was, now = self.memory.state, CODE["pending"], CODE["vf-tx"]
        outstanding = vf.outstanding[0]  # one TX queue: the guest's frames stay in order
        add, queued, entry = plugin.add_frame_to_tx_ring, outstanding.append, tuple.__new__
        if not outstanding:
            vf.last_progress = time.monotonic()
        try:
            while pending:
                count, posted, full = len(pending), 0, False
                try:
                    for buffer, length in pending:
                        sgl = [entry(SgEntry, (buffer, length))]
                        if add(0, PLAIN_SEND, sgl, posted + 1 == count) == TX_RING_FULL:
                            full = True
                            break
                        if state[buffer.id] != was:
                            self.memory.move(buffer.id, "pending", "vf-tx")  # raises: says where
                        state[buffer.id] = now
                        queued((buffer.id, length))
                        posted += 1
                finally:
                    if posted == count:
                        pending.clear()
                    else:
                        for _ in range(posted):
                            pending.popleft()
                if not full:
                    break
                self.counters["tx_ring_full"] += 1
                if not plugin.check_tx_ring(0):
                    break
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
