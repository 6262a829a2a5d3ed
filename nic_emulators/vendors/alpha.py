"""Device side of alpha rings: in-place DD write-back, addresses in descriptors, TSO."""

from __future__ import annotations

import sys

from nic_emulators.vendors import alpha_layout as a
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
from nic_emulators.vendors.tso import segment

DESC = a.DESC_BYTES
EOP, DD = a.TX_CMD_EOP, a.TX_STATUS_DD
STATUS, RX_STATUS = a.TX_STATUS_OFFSET, a.RX_STATUS_OFFSET
assert sys.byteorder == "little", "the alpha engine writes descriptors as native words"


class AlphaEngine(QueueEngine):
    def __init__(self, region: memoryview, memory: memoryview, queues: int, size: int) -> None:
        super().__init__(region, memory, queues, size)
        #: The rings as little-endian 64-bit words (the layout is little-endian, as is the host:
        #: ``LITTLE``), for reading an RX buffer address and writing back a descriptor.
        self.words = self.rings.cast("Q")

    def poll_tx(self, queue: int, budget: int) -> list[bytes]:
        pending = self.pending_tx(queue)
        if not pending:
            return []
        size, rings, memory, limit = self.size, self.rings, self.memory, self.memory_size
        words = self.words
        base = a.tx_ring_offset(queue, size)
        head = self.tx_next[queue]
        frames: list[bytes] = []
        chain: list[int] = []
        parts: list[bytes] = []
        while pending and len(frames) < budget:
            offset = base + (head % size) * DESC
            # TX_DESC as two words: the address; length, command, status, VLAN, MSS
            address, fields = words[offset >> 3], words[(offset >> 3) + 1]
            length, cmd = fields & 0xFFFF, (fields >> 16) & 0xFF
            if length <= 0 or address + length > limit:
                self.tx_next[queue] = head - len(chain)  # the frames before it went
                self.check_span(f"TX queue {queue} descriptor {head}", address, length)
            head += 1
            pending -= 1
            if cmd == EOP and not chain:  # the common case: a plain frame in one descriptor
                frames.append(memory[address : address + length].tobytes())
                rings[offset + STATUS] = DD
                continue
            parts.append(bytes(memory[address : address + length]))
            chain.append(offset)
            if len(chain) > a.MAX_CHAIN:
                self.tx_next[queue] = head - len(chain)
                raise DeviceFault(
                    "bad-length",
                    f"TX queue {queue}: frame spans more than {a.MAX_CHAIN} descriptors",
                )
            if not cmd & EOP:
                continue
            frame = parts[0] if len(parts) == 1 else b"".join(parts)
            vlan, mss = (fields >> 32) & 0xFFFF, fields >> 48
            if cmd & a.TX_CMD_VLE:
                frame = insert_vlan(frame, vlan)
            if cmd & a.TX_CMD_TSE and mss:
                frames.extend(segment(frame, mss))
            else:
                frames.append(frame)
            for done in chain:
                rings[done + STATUS] = DD
            chain.clear()
            parts.clear()
        self.tx_next[queue] = head - len(chain)  # a frame still partly posted is taken again
        # The tail (as read above: ``head`` reached it) ends inside a frame: nothing goes
        # until the driver posts more. Outside a frame, nothing is waited for.
        self.tx_waiting[queue] = head & w.INDEX_MASK if chain and not pending else -1
        self.regs[w.qreg(queue, w.TX_HEAD)] = self.tx_next[queue] & w.INDEX_MASK
        return frames

    def release(self) -> None:
        self.words.release()
        super().release()

    def deliver(self, queue: int, frame: bytes) -> int:
        if not self.posted_rx(queue):
            return NO_BUFFER
        regs, size = self.regs, self.size
        head = self.rx_next[queue]
        offset = a.rx_ring_offset(queue, size) + (head % size) * a.DESC_BYTES
        address = a.RX_DESC_READ.unpack_from(self.rings, offset)[0]
        buffer_size = regs[w.RX_BUF_SIZE] or 2048
        self.check_span(f"RX queue {queue} descriptor {head}", address, buffer_size)
        vlan = 0
        status = a.RX_STATUS_DD | a.RX_STATUS_EOP
        if regs[w.ENABLED_FEATURES] & w.FEATURE_BITS["vlan"]:
            frame, tag = strip_vlan(frame)
            if tag >= 0:
                vlan, status = tag, status | a.RX_STATUS_VP
        if len(frame) > buffer_size:
            return TOO_LONG
        self.memory[address : address + len(frame)] = frame
        a.RX_DESC_WB.pack_into(self.rings, offset, 0, len(frame), 0, 0, vlan, 0, 0)
        self.rings[offset + a.RX_STATUS_OFFSET] = status
        self.rx_next[queue] = head + 1
        regs[w.qreg(queue, w.RX_HEAD)] = (head + 1) & w.INDEX_MASK
        return DELIVERED

    def deliver_many(self, queue: int, frames: list[bytes]) -> tuple[int, int, int, int]:
        """The batch form of ``deliver``: the tail is read and the head written once."""
        posted = self.posted_rx(queue)
        regs, size, rings, memory = self.regs, self.size, self.rings, self.memory
        base = a.rx_ring_offset(queue, size)
        buffer_size = regs[w.RX_BUF_SIZE] or 2048
        limit = self.memory_size - buffer_size
        strip = regs[w.ENABLED_FEATURES] & w.FEATURE_BITS["vlan"]
        words = self.words
        done = a.RX_STATUS_DD | a.RX_STATUS_EOP
        head = self.rx_next[queue]
        delivered = nbytes = too_long = 0
        for frame in frames[:posted]:
            offset = base + (head % size) * DESC
            address = words[offset >> 3]  # RX_DESC_READ: the buffer address
            if address > limit:
                self.rx_next[queue] = head
                regs[w.qreg(queue, w.RX_HEAD)] = head & w.INDEX_MASK
                self.check_span(f"RX queue {queue} descriptor {head}", address, buffer_size)
            if strip and frame[12] == 0x81 and frame[13] == 0:
                data, vlan = strip_vlan(frame)
                status = done | a.RX_STATUS_VP
            else:
                data, vlan, status = frame, 0, done
            length = len(data)
            if length > buffer_size:
                too_long += 1
                continue
            memory[address : address + length] = data
            # RX_DESC_WB, status 0 (RSS hash, errors, packet type: 0), then the status byte
            # last: the driver reads the rest after it
            words[offset >> 3] = length << 32
            words[(offset >> 3) + 1] = vlan
            rings[offset + RX_STATUS] = status
            head += 1
            delivered += 1
            nbytes += length
        self.rx_next[queue] = head
        regs[w.qreg(queue, w.RX_HEAD)] = head & w.INDEX_MASK
        return delivered, nbytes, max(0, len(frames) - posted), too_long
