"""vmxnet3 emulated rings as the guest's shell and the hypervisor's backend share them.

One shared-memory region per guest: a register window, then a TX ring, an RX
ring (buffers posted by the shell) and an RX completion ring. Indices are
free-running u32 counters like the VF windows'. Addresses are guest-memory
offsets; the shell owns every buffer.
"""

from __future__ import annotations

import struct

WINDOW_BYTES = 4096
RING_SIZE = 1024

# register words
TX_PROD = 0  # shell: descriptors posted
TX_CONS = 1  # device: descriptors completed
RX_PROD = 2  # shell: buffers posted
RX_CONS = 3  # device: buffers filled (completions written)
KICK_ARMED = 4  # device sleeps; the shell writes the doorbell only when set
IRQ_ENABLE = 5  # shell: 1 = interrupt me
RX_BUF_SIZE = 6  # shell

TX_DESC = struct.Struct("<QII")  # address, length, flags
#: TX descriptor flag: no frame (length 0), but the end of what the guest sends over
#: emulation before its TX moves to a VF (the shell's fence marker). The device passes
#: it on to the NIC as an empty datagram, and the NIC takes nothing from the VF's TX
#: rings before it (VF_ACTIVATE with ``tx_fence``): the VF's first frames cannot
#: overtake the emulation path's last, and the guest's frames need not wait meanwhile.
TX_FLAG_FENCE = 1
RX_DESC = struct.Struct("<QII")  # address, buffer size, buffer id
RX_COMP = struct.Struct("<IIII")  # buffer id, length, flags, reserved
#: RX completion flag: no frame, but the end of what the emulation path received
#: before the guest's MAC moved to a VF (the NIC's fence marker).
RX_FLAG_FENCE = 1
DESC_BYTES = 16

TX_RING = WINDOW_BYTES
RX_RING = TX_RING + RING_SIZE * DESC_BYTES
RX_COMP_RING = RX_RING + RING_SIZE * DESC_BYTES
REGION_BYTES = RX_COMP_RING + RING_SIZE * DESC_BYTES
