"""Beta (model ``beta-25g``) descriptor formats: work queues and completion queues.

The datasheet, shared by the device model and the beta plugin. The driver
posts work queue entries (WQEs) that name a *buffer id*, not an address: at
initialisation it registers one buffer table (BUF_BASE, BUF_STRIDE, BUF_COUNT
registers), and the device resolves and checks every id against it. Each WQE
also carries its own running index, which the device checks against the slot
it reads — a stale or misplaced entry is a fault.

Completions go to separate completion queues (CQs). A CQE's owner bit is the
generation of the pass over the CQ ring that wrote it (it flips on every
wrap), so the driver knows a fresh entry from a stale one without any index
register; the driver returns CQ space through the TX_CQ_CI / RX_CQ_CI
registers, and the device stops completing when a CQ is full. The device
writes a CQE's body first, with the slot's old owner bit, and flips the owner
bit last: the driver may read the entry the moment the bit flips. Before a ring
starts (or resumes at the device's head), the driver sets every CQE's owner
bit to the opposite of what the device writes next there: CQ memory is the
driver's, and may hold zeros or an earlier user's entries.

Ring memory per queue ``q`` (after the register window), ``size`` entries each::

    TX WQ (16 B entries) | TX CQ (8 B) | RX WQ (8 B) | RX CQ (16 B)
"""

from __future__ import annotations

import struct

#: TX work queue entry: buffer id, length, flags, VLAN to insert, running WQE index.
TX_WQE = struct.Struct("<IIHHI")
TX_FLAG_CSUM = 1
TX_FLAG_VLAN = 2
#: TX completion: index of the completed WQE (low 16 bits), opcode, owner (generation) bit, bytes.
TX_CQE = struct.Struct("<HBBI")
TX_CQE_OWNER_OFFSET = 3
#: RX work queue entry: buffer id, running WQE index.
RX_WQE = struct.Struct("<II")
#: RX completion: buffer id, byte count, flags, stripped VLAN, owner bit, opcode, reserved.
RX_CQE = struct.Struct("<IIHHBBH")
RX_CQE_OWNER_OFFSET = 12
RX_FLAG_VLAN = 1
RX_FLAG_CSUM_OK = 2

OPCODE_OK = 0
OPCODE_ERROR = 13

PER_QUEUE_BYTES = TX_WQE.size + TX_CQE.size + RX_WQE.size + RX_CQE.size  # per ring slot


def tx_wq_offset(queue: int, size: int) -> int:
    return queue * PER_QUEUE_BYTES * size


def tx_cq_offset(queue: int, size: int) -> int:
    return tx_wq_offset(queue, size) + TX_WQE.size * size


def rx_wq_offset(queue: int, size: int) -> int:
    return tx_cq_offset(queue, size) + TX_CQE.size * size


def rx_cq_offset(queue: int, size: int) -> int:
    return rx_wq_offset(queue, size) + RX_WQE.size * size


def rings_bytes(queues: int, size: int) -> int:
    return queues * PER_QUEUE_BYTES * size


def owner_bit(index: int, size: int) -> int:
    """Owner bit of the CQE written at running index ``index``: 1 on the first pass."""
    return ((index // size) & 1) ^ 1
