"""Alpha (models ``alpha-10g``, and the FPGA NIC's licensed core) descriptor formats.

The datasheet, shared by the device model and the alpha plugin. Descriptors
are 16 bytes, written back in place: the device sets the DD bit in a TX
descriptor once it has taken the frame, and overwrites an RX descriptor (the
buffer address is lost, so the driver keeps a shadow of what it posted at each
slot, as real drivers do).

Ring memory per queue ``q`` (after the register window)::

    q * 32 * size          TX ring, size x TX_DESC
    q * 32 * size + 16*size RX ring, size x RX_DESC_READ / RX_DESC_WB
"""

from __future__ import annotations

import struct

DESC_BYTES = 16

#: TX descriptor: buffer address, length, command bits, status bits, VLAN tag to insert, MSS.
TX_DESC = struct.Struct("<QHBBHH")
TX_STATUS_OFFSET = 11
TX_CMD_EOP = 1  # last descriptor of a frame
TX_CMD_CSUM = 2  # insert L4 checksum
TX_CMD_VLE = 4  # insert the VLAN tag from the descriptor
TX_CMD_TSE = 8  # TCP segmentation with the descriptor's MSS
TX_STATUS_DD = 1

#: RX descriptor as posted by the driver: buffer address (second word unused).
RX_DESC_READ = struct.Struct("<QQ")
#: RX descriptor as written back: RSS hash, length, status, errors, stripped VLAN, packet type.
RX_DESC_WB = struct.Struct("<IHBBHHI")
RX_STATUS_OFFSET = 6
RX_STATUS_DD = 1
RX_STATUS_EOP = 2
RX_STATUS_VP = 4  # VLAN tag stripped into the descriptor
RX_STATUS_L4CS = 8  # L4 checksum verified by the device

MAX_CHAIN = 16  # descriptors per frame
MAX_TSO_BYTES = 65535


def tx_ring_offset(queue: int, size: int) -> int:
    return queue * 2 * DESC_BYTES * size


def rx_ring_offset(queue: int, size: int) -> int:
    return tx_ring_offset(queue, size) + DESC_BYTES * size


def rings_bytes(queues: int, size: int) -> int:
    return queues * 2 * DESC_BYTES * size
