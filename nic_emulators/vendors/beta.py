"""Device side of beta rings: buffer ids checked against the registered table, owner-bit CQs.

A completion is written so that the driver, polling the owner bit from another
process, never reads one half-written: the entry's body goes in first carrying
the slot's old owner bit, and the owner bit flips last (``publish_cqe``).
That order reaches the driver as written because x86 keeps stores in order
(and the driver's loads) — Python has no barrier to offer; on a weaker memory
model the device and the plugin would need one between body and owner bit.
"""

from __future__ import annotations

from nic_emulators.vendors import beta_layout as b
from nic_emulators.vendors import window as w
from nic_emulators.vendors.engine import (
    DELIVERED,
    NO_BUFFER,
    TOO_LONG,
    DeviceFault,
    QueueEngine,
    insert_vlan,
    strip_vlan,
)


def publish_cqe(rings: memoryview, offset: int, entry: bytes, owner_at: int, owner: int) -> None:
    """Write the completion ``entry`` (packed with the slot's old owner bit, ``owner ^ 1``)
    at ``offset``, then flip its owner bit to ``owner``: only then is it the driver's.

    Not ``struct.pack_into`` on the ring: it zeroes the whole entry before it writes the
    fields, and on a pass whose owner bit is 0 a driver polling that slot reads the zeros
    as a completion of buffer 0 (seen as "completion for buffer 0 never posted" and one
    frame lost, about once in 50 runs of a loaded data path)."""
    rings[offset : offset + len(entry)] = entry
    rings[offset + owner_at] = owner


class BetaEngine(QueueEngine):
    def _buffer(self, what: str, buffer_id: int, length: int) -> int:
        regs = self.regs
        if buffer_id >= regs[w.BUF_COUNT]:
            raise DeviceFault(
                "bad-buffer-id",
                f"{what}: buffer id {buffer_id} is not in the registered table "
                f"({regs[w.BUF_COUNT]} buffers)",
            )
        stride = regs[w.BUF_STRIDE]
        if length > stride:
            raise DeviceFault(
                "bad-length", f"{what}: length {length} exceeds the buffer size {stride}"
            )
        address = regs[w.BUF_BASE] + buffer_id * stride
        self.check_span(what, address, max(length, 1))
        return address

    def _cq_room(self, queue: int, ci_register: int, produced: int) -> bool:
        consumed = self.regs[w.qreg(queue, ci_register)]
        return ((produced - consumed) & w.INDEX_MASK) < self.size

    def tx_ready(self, queue: int) -> bool:
        return super().tx_ready(queue) and self._cq_room(queue, w.TX_CQ_CI, self.tx_next[queue])

    def poll_tx(self, queue: int, budget: int) -> list[bytes]:
        pending = self.pending_tx(queue)
        if not pending:
            return []
        size, rings, memory = self.size, self.rings, self.memory
        wq, cq = b.tx_wq_offset(queue, size), b.tx_cq_offset(queue, size)
        head = self.tx_next[queue]
        frames: list[bytes] = []
        while pending and len(frames) < budget and self._cq_room(queue, w.TX_CQ_CI, head):
            buffer_id, length, flags, vlan, index = b.TX_WQE.unpack_from(
                rings, wq + (head % size) * b.TX_WQE.size
            )
            what = f"TX queue {queue} WQE {head}"
            if index != head & w.INDEX_MASK:
                raise DeviceFault(
                    "bad-wqe", f"{what}: entry carries index {index} (stale or misplaced)"
                )
            address = self._buffer(what, buffer_id, length)
            frame = bytes(memory[address : address + length])
            if flags & b.TX_FLAG_VLAN:
                frame = insert_vlan(frame, vlan)
            frames.append(frame)
            owner = b.owner_bit(head, size)
            publish_cqe(
                rings,
                cq + (head % size) * b.TX_CQE.size,
                b.TX_CQE.pack(head & 0xFFFF, b.OPCODE_OK, owner ^ 1, length),
                b.TX_CQE_OWNER_OFFSET,
                owner,
            )
            head += 1
            pending -= 1
        self.tx_next[queue] = head
        self.regs[w.qreg(queue, w.TX_HEAD)] = head & w.INDEX_MASK
        return frames

    def deliver(self, queue: int, frame: bytes) -> int:
        if not self.posted_rx(queue):
            return NO_BUFFER
        head = self.rx_next[queue]
        if not self._cq_room(queue, w.RX_CQ_CI, head):
            return NO_BUFFER
        size, rings = self.size, self.rings
        buffer_id, index = b.RX_WQE.unpack_from(
            rings, b.rx_wq_offset(queue, size) + (head % size) * b.RX_WQE.size
        )
        what = f"RX queue {queue} WQE {head}"
        if index != head & w.INDEX_MASK:
            raise DeviceFault(
                "bad-wqe", f"{what}: entry carries index {index} (stale or misplaced)"
            )
        address = self._buffer(what, buffer_id, 0)
        flags, vlan = 0, 0
        if self.regs[w.ENABLED_FEATURES] & w.FEATURE_BITS["vlan"]:
            frame, tag = strip_vlan(frame)
            if tag >= 0:
                flags, vlan = b.RX_FLAG_VLAN, tag
        if len(frame) > self.regs[w.BUF_STRIDE]:
            return TOO_LONG
        self.memory[address : address + len(frame)] = frame
        owner = b.owner_bit(head, size)
        publish_cqe(
            rings,
            b.rx_cq_offset(queue, size) + (head % size) * b.RX_CQE.size,
            b.RX_CQE.pack(buffer_id, len(frame), flags, vlan, owner ^ 1, b.OPCODE_OK, 0),
            b.RX_CQE_OWNER_OFFSET,
            owner,
        )
        self.rx_next[queue] = head + 1
        self.regs[w.qreg(queue, w.RX_HEAD)] = (head + 1) & w.INDEX_MASK
        return DELIVERED
