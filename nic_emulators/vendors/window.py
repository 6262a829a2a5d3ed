"""The register window every emulated VF exposes (BAR0), common to all vendors.

The window is the first ``WINDOW_BYTES`` of the VF's shared-memory region;
descriptor rings follow it (their layout is per vendor). Registers are
little-endian u32 words; a plugin reads and writes them through
``RegisterWindow.regs`` and rings the doorbell with ``RegisterWindow.kick``.

Index registers are free-running u32 counters (slot = index % ring size):
the driver advances a *tail* when it posts descriptors, the device a *head*
when it has consumed them.
"""

from __future__ import annotations

from collections.abc import Callable

WINDOW_BYTES = 4096
MAX_QUEUES = 8
INDEX_MASK = 0xFFFFFFFF

# -- words ------------------------------------------------------------------
STATUS = 0  # device: STATUS_* bits
KICK_ARMED = 1  # device sets it before sleeping; the driver kicks only when set
ERROR = 2  # device: error code of the last fault (ERR_*)
NUM_QUEUES = 3  # device
RING_SIZE = 4  # device
FEATURES = 5  # device: FEATURE_* bits the VF offers
ENABLED_FEATURES = 6  # driver: FEATURE_* bits it uses (must be a subset of FEATURES)
RX_BUF_SIZE = 7  # driver: size of every posted RX buffer
IRQ_ENABLE = 8  # driver: words IRQ_ENABLE + vector, 1 = raise interrupts on this vector
BUF_BASE = 24  # driver (buffer-id vendors): guest address of buffer 0
BUF_STRIDE = 25  # driver (buffer-id vendors): bytes between buffers
BUF_COUNT = 26  # driver (buffer-id vendors): number of valid buffer ids
QUEUE_BASE = 32  # per-queue block of QUEUE_WORDS words
QUEUE_WORDS = 16
# offsets inside a queue block
TX_TAIL = 0  # driver
TX_HEAD = 1  # device
RX_TAIL = 2  # driver
RX_HEAD = 3  # device
TX_CQ_CI = 4  # driver: completion-queue consumer index (vendors with CQs)
RX_CQ_CI = 5  # driver

STATUS_ACTIVE = 1
STATUS_QUARANTINED = 2
STATUS_LINK_UP = 4

FEATURE_BITS = {"csum": 1, "vlan": 2, "tso": 4, "rss": 8, "lro": 16}


def feature_mask(features: frozenset[str] | set[str]) -> int:
    mask = 0
    for name in features:
        mask |= FEATURE_BITS[name]
    return mask


def feature_names(mask: int) -> frozenset[str]:
    return frozenset(name for name, bit in FEATURE_BITS.items() if mask & bit)


def qreg(queue: int, offset: int) -> int:
    """Word index of register ``offset`` of queue ``queue``."""
    return QUEUE_BASE + queue * QUEUE_WORDS + offset


class RegisterWindow:
    """What a plugin gets of its VF: the registers, the ring memory and the doorbell."""

    def __init__(self, region: memoryview, kick: Callable[[], None]) -> None:
        self.regs = region[:WINDOW_BYTES].cast("I")
        self.rings = region[WINDOW_BYTES:]
        self._kick = kick

    def kick(self) -> None:
        """Tell the device there is work, if it is waiting for that (doorbell write)."""
        regs = self.regs
        if regs[KICK_ARMED]:
            regs[KICK_ARMED] = 0
            self._kick()

    def release(self) -> None:
        self.regs.release()
        self.rings.release()
