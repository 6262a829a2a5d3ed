"""The beta plugin's completion queues when a ring (re)starts: whatever the CQ memory
holds, nothing reads as a completion until the device writes one (a unit test of the
plugin's ring state; the device side here writes CQEs exactly as the datasheet says).

Seen in a nightly run before the plugin set the owner bits up: after migrations back
and forth, a beta VF's ring resumed at a head in an even pass over zeroed CQ memory;
zeros carry the owner bit the plugin expected there, so it took a "completion for
buffer 0 never posted" and skipped the device's real first one: one frame lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from drivers.plugin_api import Buffer, RecvInfo, VfInfo
from drivers.plugins.beta import BetaPlugin
from nic_emulators.vendors import beta_layout as b
from nic_emulators.vendors import window as w

SIZE = 64


@dataclass
class Services:
    next_id: int = 0
    received: list[tuple[int, int]] = field(default_factory=list)
    completed: int = 0
    errors: list[str] = field(default_factory=list)

    def alloc_small_buffer(self) -> Buffer | None:
        self.next_id += 1
        return Buffer(self.next_id, 0x10000 + self.next_id * 2048, 2048)

    def alloc_large_buffer(self) -> Buffer | None:
        return None

    def indicate_recv(self, buffer: Buffer, length: int, info: RecvInfo) -> None:
        self.received.append((buffer.id, length))

    def complete_send(self, queue: int, count: int) -> None:
        self.completed += count

    def log(self, level: str, message: str) -> None:
        if level == "error":
            self.errors.append(message)


def plugin_over(memory: str, head: int) -> tuple[BetaPlugin, w.RegisterWindow, Services]:
    """A beta plugin started on a VF whose device heads are at ``head``, over CQ memory
    holding ``memory``: "zeros", or "stale" entries of an earlier user (every owner bit
    as the device would have written it on the pass ``head`` is in)."""
    region = bytearray(w.WINDOW_BYTES + b.rings_bytes(1, SIZE))
    window = w.RegisterWindow(memoryview(region), kick=lambda: None)
    window.regs[w.qreg(0, w.RX_HEAD)] = head
    window.regs[w.qreg(0, w.TX_HEAD)] = head
    if memory == "stale":
        rx_cq, tx_cq = b.rx_cq_offset(0, SIZE), b.tx_cq_offset(0, SIZE)
        for slot in range(SIZE):
            owner = b.owner_bit(head + (slot - head) % SIZE, SIZE)
            window.rings[rx_cq + slot * b.RX_CQE.size + b.RX_CQE_OWNER_OFFSET] = owner
            window.rings[tx_cq + slot * b.TX_CQE.size + b.TX_CQE_OWNER_OFFSET] = owner
    info = VfInfo(
        vendor="beta", plugin="beta", version="3.0", queues=1, ring_size=SIZE,
        features=frozenset({"vlan"}), opaque={}, buffer_table=(0x10000, 2048, 4096),
    )  # fmt: skip
    services = Services()
    plugin = BetaPlugin(window, info, services)
    plugin.sw_init()
    return plugin, window, services


def device_completes_rx(window: w.RegisterWindow, head: int, length: int) -> None:
    """What the device does for one received frame: the WQE at ``head`` names the
    buffer, the CQE at ``head`` says it is done, its owner bit written last."""
    rings = window.rings
    wqe = b.rx_wq_offset(0, SIZE) + (head % SIZE) * b.RX_WQE.size
    buffer_id, _ = b.RX_WQE.unpack_from(rings, wqe)
    slot = b.rx_cq_offset(0, SIZE) + (head % SIZE) * b.RX_CQE.size
    b.RX_CQE.pack_into(rings, slot, buffer_id, length, 0, 0, 0, b.OPCODE_OK, 0)
    rings[slot + b.RX_CQE_OWNER_OFFSET] = b.owner_bit(head, SIZE)


@pytest.mark.parametrize("memory", ["zeros", "stale"])
@pytest.mark.parametrize("head", [0, SIZE + 5, 2 * SIZE + 7, 3 * SIZE])
def test_nothing_reads_as_a_completion_before_the_device_writes_one(memory: str, head: int) -> None:
    plugin, window, services = plugin_over(memory, head)
    assert plugin.add_buffers_to_rx_ring(0) == SIZE
    assert plugin.check_rx_ring(0, SIZE) == 0
    assert plugin.check_tx_ring(0) == 0
    assert (services.received, services.completed, services.errors) == ([], 0, [])
    # the device's first real completion is the first one taken, with its own buffer
    device_completes_rx(window, head, 128)
    assert plugin.check_rx_ring(0, SIZE) == 1
    assert services.received == [(1, 128)] and services.errors == []
