"""Plugin for beta VFs: buffer ids against a registered table, completion queues with owner bits.

Written against the beta datasheet (``nic_emulators.vendors.beta_layout``) and
the plugin interface (``drivers.plugin_api``) only. No TSO, no RSS, no
multi-buffer frames.
"""

from __future__ import annotations

from drivers.plugin_api import (
    NO_RECV_INFO,
    TX_QUEUED,
    TX_RING_FULL,
    Buffer,
    RecvInfo,
    SendInfo,
    SgEntry,
    ShellServices,
    VfInfo,
)
from nic_emulators.vendors import beta_layout as b
from nic_emulators.vendors import window as w

PLUGIN_NAME = "beta"
VENDOR = "beta"
VERSION = "3.0"
API_VERSION = "1.1"
MASK = 0xFFFFFFFF
#: Buffers kept posted per queue, and posted per call at most (see the alpha plugin).
RX_POST_LIMIT = 4095
RX_REFILL_BUDGET = 256


class BetaPlugin:
    def __init__(self, window: w.RegisterWindow, info: VfInfo, services: ShellServices) -> None:
        self.regs, self.rings, self.kick = window.regs, window.rings, window.kick
        self.info, self.services = info, services
        self.size, self.queues = info.ring_size, info.queues
        self.tx_tail = [0] * self.queues
        self.tx_ci = [0] * self.queues
        self.rx_tail = [0] * self.queues
        self.rx_ci = [0] * self.queues
        self.posted: list[dict[int, Buffer]] = [{} for _ in range(self.queues)]

    def sw_init(self) -> None:
        base, stride, count = self.info.buffer_table
        self.regs[w.BUF_BASE], self.regs[w.BUF_STRIDE], self.regs[w.BUF_COUNT] = base, stride, count
        self.regs[w.ENABLED_FEATURES] = w.feature_mask(self.info.features)
        for queue in range(self.queues):
            self.reinit_tx_ring(queue)
            self.reinit_rx_ring(queue)

    def reinit_tx_ring(self, queue: int) -> None:
        head = self.regs[w.qreg(queue, w.TX_HEAD)]
        self._disown(b.tx_cq_offset(queue, self.size), b.TX_CQE.size, b.TX_CQE_OWNER_OFFSET, head)
        self.tx_tail[queue] = self.tx_ci[queue] = head
        self.regs[w.qreg(queue, w.TX_TAIL)] = head
        self.regs[w.qreg(queue, w.TX_CQ_CI)] = head

    def reinit_rx_ring(self, queue: int) -> None:
        head = self.regs[w.qreg(queue, w.RX_HEAD)]
        self._disown(b.rx_cq_offset(queue, self.size), b.RX_CQE.size, b.RX_CQE_OWNER_OFFSET, head)
        self.rx_tail[queue] = self.rx_ci[queue] = head
        self.regs[w.qreg(queue, w.RX_TAIL)] = head
        self.regs[w.qreg(queue, w.RX_CQ_CI)] = head
        self.posted[queue] = {}

    def _disown(self, cq: int, entry: int, owner_at: int, head: int) -> None:
        """Mark every entry of a completion queue as not yet written for the pass the
        ring resumes in: its owner bit the opposite of what the device writes next
        there (the datasheet's ring set-up). The memory may hold anything: zeros, or an
        earlier user's entries; an owner bit that matched by chance would read as a
        completion the device never wrote (a bogus buffer id, a real frame skipped)."""
        size, rings = self.size, self.rings
        for slot in range(size):
            index = head + (slot - head) % size  # the next running index on this slot
            rings[cq + slot * entry + owner_at] = b.owner_bit(index, size) ^ 1

    def enable_interrupt(self, vector: int) -> None:
        self.regs[w.IRQ_ENABLE + vector] = 1

    def disable_interrupt(self, vector: int) -> None:
        self.regs[w.IRQ_ENABLE + vector] = 0

    def add_frame_to_tx_ring(
        self, queue: int, send_info: SendInfo, sgl: list[SgEntry], last_pkt_hint: bool
    ) -> int:
        tail = self.tx_tail[queue]
        if tail - self.tx_ci[queue] >= self.size or len(sgl) != 1:
            self.regs[w.qreg(queue, w.TX_TAIL)] = tail & MASK
            self.kick()
            return TX_RING_FULL
        buffer, length = sgl[0]
        flags, vlan = (b.TX_FLAG_VLAN, send_info.vlan) if send_info.vlan is not None else (0, 0)
        offset = b.tx_wq_offset(queue, self.size) + (tail % self.size) * b.TX_WQE.size
        b.TX_WQE.pack_into(self.rings, offset, buffer.id, length, flags, vlan, tail & MASK)
        tail += 1
        self.tx_tail[queue] = tail
        if last_pkt_hint:
            self.regs[w.qreg(queue, w.TX_TAIL)] = tail & MASK
            self.kick()
        return TX_QUEUED

    def check_tx_ring(self, queue: int) -> int:
        size, rings = self.size, self.rings
        cq = b.tx_cq_offset(queue, size)
        ci, tail = self.tx_ci[queue], self.tx_tail[queue]
        start = ci
        while ci != tail:
            if rings[cq + (ci % size) * b.TX_CQE.size + b.TX_CQE_OWNER_OFFSET] != b.owner_bit(
                ci, size
            ):
                break
            ci += 1
        done = ci - start
        if done:
            self.tx_ci[queue] = ci
            self.regs[w.qreg(queue, w.TX_CQ_CI)] = ci & MASK
            self.services.complete_send(queue, done)
        return done

    def check_rx_ring(self, queue: int, max_pkts: int) -> int:
        size, rings = self.size, self.rings
        cq = b.rx_cq_offset(queue, size)
        posted, indicate = self.posted[queue], self.services.indicate_recv
        ci, tail = self.rx_ci[queue], self.rx_tail[queue]
        count = 0
        while ci != tail and count < max_pkts:
            offset = cq + (ci % size) * b.RX_CQE.size
            if rings[offset + b.RX_CQE_OWNER_OFFSET] != b.owner_bit(ci, size):
                break
            buffer_id, length, flags, vlan, _owner, _op, _ = b.RX_CQE.unpack_from(rings, offset)
            ci += 1
            count += 1
            buffer = posted.pop(buffer_id, None)
            if buffer is None:
                self.services.log(
                    "error", f"queue {queue}: completion for buffer {buffer_id} never posted"
                )
                continue
            indicate(
                buffer, length, RecvInfo(vlan=vlan) if flags & b.RX_FLAG_VLAN else NO_RECV_INFO
            )
        if count:
            self.rx_ci[queue] = ci
            self.regs[w.qreg(queue, w.RX_CQ_CI)] = ci & MASK
        return count

    def add_buffers_to_rx_ring(self, queue: int) -> int:
        tail = self.rx_tail[queue]
        room = min(self.size, RX_POST_LIMIT) - (tail - self.rx_ci[queue])
        if room <= 0:
            return 0
        buffers = self.services.alloc_small_buffers(min(room, RX_REFILL_BUDGET))
        size, rings, posted = self.size, self.rings, self.posted[queue]
        wq, pack, wqe = b.rx_wq_offset(queue, size), b.RX_WQE.pack_into, b.RX_WQE.size
        for buffer in buffers:
            pack(rings, wq + (tail % size) * wqe, buffer.id, tail & MASK)
            posted[buffer.id] = buffer
            tail += 1
        if buffers:
            self.rx_tail[queue] = tail
            self.regs[w.qreg(queue, w.RX_TAIL)] = tail & MASK
        return len(buffers)


def plugin_entry(window: w.RegisterWindow, info: VfInfo, services: ShellServices) -> BetaPlugin:
    return BetaPlugin(window, info, services)
