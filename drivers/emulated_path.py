"""The shell's side of the vmxnet3 emulated rings (``nic_emulators.vmxnet3.layout``)."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from pathlib import Path

from drivers.guest_memory import SMALL, GuestMemory
from drivers.plugin_api import Buffer
from nic_emulators.notify import Fifo
from nic_emulators.shm import SharedRegion
from nic_emulators.vmxnet3 import layout as v

MASK = 0xFFFFFFFF
RX_POST_LIMIT = 1023
#: What ``tx_inflight`` holds for a TX fence: no buffer.
FENCE_ID = -1


class EmulatedRings:
    def __init__(
        self, region_name: str, doorbell: str, interrupt: str, memory: GuestMemory
    ) -> None:
        self.region = SharedRegion.open(region_name)
        self.view = self.region.view
        self.regs = self.view[: v.WINDOW_BYTES].cast("I")
        self.doorbell = Fifo(Path(doorbell))
        self.interrupt = Fifo(Path(interrupt))
        self.memory = memory
        self.tx_prod = self.regs[v.TX_PROD]
        self.tx_cons = self.regs[v.TX_CONS]
        self.rx_prod = self.regs[v.RX_PROD]
        self.rx_cons = self.regs[v.RX_CONS]
        self.tx_inflight: deque[tuple[int, int]] = deque()
        self.rx_posted: dict[int, Buffer] = {}
        self.regs[v.RX_BUF_SIZE] = SMALL
        self.fences = 0

    def remap(self, region_name: str, doorbell: str, interrupt: str) -> None:
        """The device moved (live migration): the same rings, copied into another region
        behind other notification FIFOs; every position the shell holds stays valid."""
        with contextlib.suppress(BufferError):  # a view still held: unmapped at exit instead
            self.regs.release()
            self.view.release()
        self.doorbell.close()
        self.interrupt.close()
        self.region.close()
        self.region = SharedRegion.open(region_name)
        self.view = self.region.view
        self.regs = self.view[: v.WINDOW_BYTES].cast("I")
        self.doorbell = Fifo(Path(doorbell))
        self.interrupt = Fifo(Path(interrupt))

    def send(self, buffer: Buffer, length: int) -> bool:
        """Post one frame (the buffer is already filled); False when the ring is full."""
        if self.tx_prod - self.tx_cons >= v.RING_SIZE:
            return False
        v.TX_DESC.pack_into(
            self.view,
            v.TX_RING + (self.tx_prod % v.RING_SIZE) * v.DESC_BYTES,
            buffer.addr,
            length,
            0,
        )
        self.tx_prod += 1
        self.tx_inflight.append((buffer.id, length))
        return True

    def send_fence(self) -> bool:
        """Post the TX fence (``layout.TX_FLAG_FENCE``) behind every frame posted so far;
        False when the ring is full. It holds no buffer: its completion hands none back."""
        if self.tx_prod - self.tx_cons >= v.RING_SIZE:
            return False
        slot = (self.tx_prod % v.RING_SIZE) * v.DESC_BYTES
        v.TX_DESC.pack_into(self.view, v.TX_RING + slot, 0, 0, v.TX_FLAG_FENCE)
        self.tx_prod += 1
        self.tx_inflight.append((FENCE_ID, 0))
        return True

    def flush(self) -> None:
        """Publish the posted frames and ring the doorbell if the device sleeps."""
        regs = self.regs
        regs[v.TX_PROD] = self.tx_prod & MASK
        if regs[v.KICK_ARMED]:
            regs[v.KICK_ARMED] = 0
            self.doorbell.notify()

    def reclaim(self, completed: Callable[[int, int], None]) -> int:
        """Hand back buffers of frames the device has sent; ``completed(id, length)`` each."""
        done = (self.regs[v.TX_CONS] - self.tx_cons) & MASK
        for _ in range(done):
            buffer_id, length = self.tx_inflight.popleft()
            if buffer_id != FENCE_ID:
                completed(buffer_id, length)
        self.tx_cons += done
        return done

    def post_rx(self) -> None:
        memory, view = self.memory, self.view
        posted = 0
        while self.rx_prod - self.rx_cons < RX_POST_LIMIT:
            buffer = memory.take("emu-rx")
            if buffer is None:
                break
            slot = (self.rx_prod % v.RING_SIZE) * v.DESC_BYTES
            v.RX_DESC.pack_into(view, v.RX_RING + slot, buffer.addr, buffer.size, buffer.id)
            self.rx_posted[buffer.id] = buffer
            self.rx_prod += 1
            posted += 1
        if posted:
            self.regs[v.RX_PROD] = self.rx_prod & MASK

    def poll_rx(self, deliver: Callable[[Buffer, int], None], budget: int = 256) -> int:
        available = (self.regs[v.RX_CONS] - self.rx_cons) & MASK
        count = min(available, budget)
        view = self.view
        done = 0
        while done < count:
            slot = (self.rx_cons % v.RING_SIZE) * v.DESC_BYTES
            buffer_id, length, flags, _ = v.RX_COMP.unpack_from(view, v.RX_COMP_RING + slot)
            self.rx_cons += 1
            done += 1
            buffer = self.rx_posted.pop(buffer_id)
            fence = bool(flags & v.RX_FLAG_FENCE)
            if fence:
                self.fences += 1
            else:
                deliver(buffer, length)
            self.memory.give_back(buffer_id, "emu-rx")
            if fence:
                break  # what the VF received comes next: the caller takes it first
        count = done
        if count:
            self.post_rx()
        return count

    def enable_interrupt(self) -> None:
        self.regs[v.IRQ_ENABLE] = 1

    def close(self) -> None:
        self.regs.release()
        self.view.release()
        self.doorbell.close()
        self.interrupt.close()
        self.region.close()
