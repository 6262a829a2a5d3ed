"""Plugin for alpha VFs: in-place descriptor write-back, shadow rings, TSO and RSS.

Written against the alpha datasheet (``nic_emulators.vendors.alpha_layout``)
and the plugin interface (``drivers.plugin_api``) only.
"""

from __future__ import annotations

import struct

from drivers.plugin_api import (
    NO_RECV_INFO,
    PLAIN_SEND,
    TX_QUEUED,
    TX_RING_FULL,
    Buffer,
    RecvInfo,
    SendInfo,
    SgEntry,
    ShellServices,
    VfInfo,
)
from nic_emulators.vendors import alpha_layout as a
from nic_emulators.vendors import window as w

PLUGIN_NAME = "alpha"
VENDOR = "alpha"
VERSION = "1.2"
API_VERSION = "1.1"
MASK = 0xFFFFFFFF
TX_DESC, DESC, EOP = a.TX_DESC, a.DESC_BYTES, a.TX_CMD_EOP
#: Buffers kept posted per queue: a deep ring rides out scheduling delays.
RX_POST_LIMIT = 4095
#: Buffers posted per call at most, as a NAPI poll refills in budgets: the first
#: fill after ``sw_init`` spreads over a few of the shell's passes instead of
#: holding the guest's traffic for the whole ring (the shell calls again while
#: buffers go in).
RX_REFILL_BUDGET = 256
#: The write-back fields the driver reads: length, status, errors, VLAN (from byte 4).
RX_WB_FIELDS = struct.Struct("<HBBH")


class AlphaPlugin:
    def __init__(self, window: w.RegisterWindow, info: VfInfo, services: ShellServices) -> None:
        self.regs, self.rings, self.kick = window.regs, window.rings, window.kick
        self.info, self.services = info, services
        self.size, self.queues = info.ring_size, info.queues
        self.tx_tail = [0] * self.queues
        self.tx_clean = [0] * self.queues
        self.tx_eop: list[list[bool]] = [[False] * self.size for _ in range(self.queues)]
        self.rx_tail = [0] * self.queues
        self.rx_clean = [0] * self.queues
        self.rx_shadow: list[list[Buffer | None]] = [[None] * self.size for _ in range(self.queues)]
        self.tx_base = [a.tx_ring_offset(q, self.size) for q in range(self.queues)]
        self.rx_base = [a.rx_ring_offset(q, self.size) for q in range(self.queues)]

    def sw_init(self) -> None:
        self.regs[w.ENABLED_FEATURES] = w.feature_mask(self.info.features)
        self.regs[w.RX_BUF_SIZE] = 2048
        for queue in range(self.queues):
            self.reinit_tx_ring(queue)
            self.reinit_rx_ring(queue)

    def reinit_tx_ring(self, queue: int) -> None:
        head = self.regs[w.qreg(queue, w.TX_HEAD)]
        self.tx_tail[queue] = self.tx_clean[queue] = head
        self.regs[w.qreg(queue, w.TX_TAIL)] = head
        self.tx_eop[queue] = [False] * self.size

    def reinit_rx_ring(self, queue: int) -> None:
        head = self.regs[w.qreg(queue, w.RX_HEAD)]
        self.rx_tail[queue] = self.rx_clean[queue] = head
        self.regs[w.qreg(queue, w.RX_TAIL)] = head
        self.rx_shadow[queue] = [None] * self.size

    def enable_interrupt(self, vector: int) -> None:
        self.regs[w.IRQ_ENABLE + vector] = 1

    def disable_interrupt(self, vector: int) -> None:
        self.regs[w.IRQ_ENABLE + vector] = 0

    def add_frame_to_tx_ring(
        self, queue: int, send_info: SendInfo, sgl: list[SgEntry], last_pkt_hint: bool
    ) -> int:
        size, tail = self.size, self.tx_tail[queue]
        if (tail - self.tx_clean[queue]) + len(sgl) >= size:
            self.regs[w.qreg(queue, w.TX_TAIL)] = tail & MASK
            self.kick()
            return TX_RING_FULL
        if send_info is PLAIN_SEND and len(sgl) == 1:  # the common case: one plain buffer
            buffer, length = sgl[0]
            slot = tail % size
            TX_DESC.pack_into(
                self.rings, self.tx_base[queue] + slot * DESC, buffer.addr, length, EOP, 0, 0, 0
            )
            self.tx_eop[queue][slot] = True
            tail += 1
        else:
            tail = self._post_chain(queue, send_info, sgl, tail)
        self.tx_tail[queue] = tail
        if last_pkt_hint:
            self.regs[w.qreg(queue, w.TX_TAIL)] = tail & MASK
            self.kick()
        return TX_QUEUED

    def _post_chain(self, queue: int, send_info: SendInfo, sgl: list[SgEntry], tail: int) -> int:
        """Descriptors for a frame with offloads or in several buffers; returns the new tail."""
        size, base, rings, eop = self.size, self.tx_base[queue], self.rings, self.tx_eop[queue]
        cmd0 = 0
        vlan = 0
        if send_info.vlan is not None:
            cmd0, vlan = a.TX_CMD_VLE, send_info.vlan
        if send_info.mss:
            cmd0 |= a.TX_CMD_TSE
        last = len(sgl) - 1
        for i, (buffer, length) in enumerate(sgl):
            slot = tail % size
            cmd = cmd0 | (a.TX_CMD_EOP if i == last else 0)
            offset = base + slot * a.DESC_BYTES
            a.TX_DESC.pack_into(rings, offset, buffer.addr, length, cmd, 0, vlan, send_info.mss)
            eop[slot] = i == last
            tail += 1
        return tail

    def check_tx_ring(self, queue: int) -> int:
        head = self.regs[w.qreg(queue, w.TX_HEAD)]
        clean = self.tx_clean[queue]
        done = (head - clean) & MASK
        if not done:
            return 0
        size, eop = self.size, self.tx_eop[queue]
        start = clean % size
        end = start + done
        if end <= size:
            frames = eop[start:end].count(True)
        else:  # the completions wrap around the ring's end
            frames = eop[start:].count(True) + eop[: end - size].count(True)
        self.tx_clean[queue] = clean + done
        if frames:
            self.services.complete_send(queue, frames)
        return frames

    def check_rx_ring(self, queue: int, max_pkts: int) -> int:
        size, rings, base = self.size, self.rings, self.rx_base[queue]
        shadow, indicate = self.rx_shadow[queue], self.services.indicate_recv
        clean, tail = self.rx_clean[queue], self.rx_tail[queue]
        count = 0
        while clean != tail and count < max_pkts:
            offset = base + (clean % size) * a.DESC_BYTES
            if not rings[offset + a.RX_STATUS_OFFSET] & a.RX_STATUS_DD:
                break
            length, status, _err, vlan = RX_WB_FIELDS.unpack_from(rings, offset + 4)
            buffer = shadow[clean % size]
            shadow[clean % size] = None
            clean += 1
            count += 1
            if buffer is None:
                self.services.log(
                    "error", f"queue {queue}: completion for an empty slot {clean - 1}"
                )
                continue
            info = RecvInfo(vlan=vlan) if status & a.RX_STATUS_VP else NO_RECV_INFO
            indicate(buffer, length, info)
        self.rx_clean[queue] = clean
        return count

    def add_buffers_to_rx_ring(self, queue: int) -> int:
        tail = self.rx_tail[queue]
        room = min(self.size - 1, RX_POST_LIMIT) - (tail - self.rx_clean[queue])
        if room <= 0:
            return 0
        buffers = self.services.alloc_small_buffers(min(room, RX_REFILL_BUDGET))
        size, rings, base = self.size, self.rings, self.rx_base[queue]
        shadow, pack = self.rx_shadow[queue], a.RX_DESC_READ.pack_into
        for buffer in buffers:
            slot = tail % size
            pack(rings, base + slot * DESC, buffer.addr, 0)
            shadow[slot] = buffer
            tail += 1
        if buffers:
            self.rx_tail[queue] = tail
            self.regs[w.qreg(queue, w.RX_TAIL)] = tail & MASK
        return len(buffers)

    def posted_rx(self) -> list[Buffer]:
        return [b for ring in self.rx_shadow for b in ring if b is not None]


def plugin_entry(window: w.RegisterWindow, info: VfInfo, services: ShellServices) -> AlphaPlugin:
    return AlphaPlugin(window, info, services)
