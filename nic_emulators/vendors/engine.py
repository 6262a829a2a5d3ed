"""What every vendor's device-side ring engine provides to the VF model.

The engine is the part of the device that reads what the driver wrote
(descriptors, tail registers) and writes what the driver reads (write-backs,
completions, head registers). It trusts nothing: an index, address, buffer id
or length out of range raises ``DeviceFault``, and the VF is quarantined.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from nic_emulators.vendors import window as w

#: ``deliver`` results.
DELIVERED = 0
NO_BUFFER = 1
TOO_LONG = 2


class DeviceFault(Exception):
    """The driver broke the device contract; ``code`` is one of ``FAULT_CODES``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


FAULT_CODES = {"bad-index": 1, "bad-address": 2, "bad-buffer-id": 3, "bad-length": 4, "bad-wqe": 5}


class QueueEngine(ABC):
    """Device side of one VF's queues."""

    def __init__(self, region: memoryview, memory: memoryview, queues: int, size: int) -> None:
        self.regs = region[: w.WINDOW_BYTES].cast("I")
        self.rings = region[w.WINDOW_BYTES :]
        self.memory = memory
        self.memory_size = len(memory)
        self.queues = queues
        self.size = size
        self.tx_next = [0] * queues
        self.rx_next = [0] * queues
        #: Per TX queue, the tail at which ``poll_tx`` last found only part of a frame
        #: posted (-1: none): nothing can go until the driver posts more.
        self.tx_waiting = [-1] * queues

    def pending_tx(self, queue: int) -> int:
        """Descriptors posted and not yet taken; DeviceFault if the tail is beyond the ring."""
        pending = (self.regs[w.qreg(queue, w.TX_TAIL)] - self.tx_next[queue]) & w.INDEX_MASK
        if pending > self.size:
            raise DeviceFault(
                "bad-index",
                f"TX queue {queue}: tail {self.regs[w.qreg(queue, w.TX_TAIL)]} is {pending} "
                f"descriptors past the device's head {self.tx_next[queue]}, "
                f"the ring has {self.size}",
            )
        return pending

    def tx_ready(self, queue: int) -> bool:
        """Whether ``poll_tx`` can take a frame now: one is posted (and, on a vendor with
        completion queues, there is room to complete it). A driver that stops returning
        completion space stalls only its own queue: the device waits, as hardware does,
        instead of spinning on it or, in VF_QUIESCE, waiting for it forever."""
        return (
            self.pending_tx(queue) > 0
            and self.regs[w.qreg(queue, w.TX_TAIL)] != self.tx_waiting[queue]
        )

    def posted_rx(self, queue: int) -> int:
        posted = (self.regs[w.qreg(queue, w.RX_TAIL)] - self.rx_next[queue]) & w.INDEX_MASK
        if posted > self.size:
            raise DeviceFault(
                "bad-index",
                f"RX queue {queue}: tail {self.regs[w.qreg(queue, w.RX_TAIL)]} is {posted} "
                f"descriptors past the device's head {self.rx_next[queue]}, "
                f"the ring has {self.size}",
            )
        return posted

    def check_span(self, what: str, address: int, length: int) -> None:
        if length <= 0 or address < 0 or address + length > self.memory_size:
            raise DeviceFault(
                "bad-address",
                f"{what}: buffer {address:#x}+{length} is outside guest memory "
                f"(0..{self.memory_size:#x})",
            )

    @abstractmethod
    def poll_tx(self, queue: int, budget: int) -> list[bytes]:
        """Take up to ``budget`` frames from TX queue ``queue`` and complete them."""

    @abstractmethod
    def deliver(self, queue: int, frame: bytes) -> int:
        """Put ``frame`` into the next posted RX buffer: DELIVERED / NO_BUFFER / TOO_LONG."""

    def deliver_many(self, queue: int, frames: list[bytes]) -> tuple[int, int, int, int]:
        """Deliver ``frames`` in order: (delivered, bytes delivered, no buffer, too long)."""
        delivered = nbytes = no_buffer = too_long = 0
        for frame in frames:
            result = self.deliver(queue, frame)
            if result == DELIVERED:
                delivered += 1
                nbytes += len(frame)
            elif result == NO_BUFFER:
                no_buffer += 1
            else:
                too_long += 1
        return delivered, nbytes, no_buffer, too_long

    def save_state(self) -> dict[str, Any]:
        """Ring indices, as VF_SAVE_STATE reports them (VF_INIT may restore them)."""
        return {"tx_next": list(self.tx_next), "rx_next": list(self.rx_next)}

    def restore(self, state: dict[str, Any]) -> None:
        for q in range(self.queues):
            self.tx_next[q] = int(state.get("tx_next", [0] * self.queues)[q])
            self.rx_next[q] = int(state.get("rx_next", [0] * self.queues)[q])
            self.regs[w.qreg(q, w.TX_HEAD)] = self.tx_next[q] & w.INDEX_MASK
            self.regs[w.qreg(q, w.RX_HEAD)] = self.rx_next[q] & w.INDEX_MASK

    def queue_status(self) -> list[dict[str, int]]:
        """GET_QUEUE_STATUS: indices of every queue as the device sees them."""
        regs = self.regs
        return [
            {
                "tx_tail": regs[w.qreg(q, w.TX_TAIL)],
                "tx_head": self.tx_next[q],
                "rx_tail": regs[w.qreg(q, w.RX_TAIL)],
                "rx_head": self.rx_next[q],
            }
            for q in range(self.queues)
        ]

    def release(self) -> None:
        self.regs.release()
        self.rings.release()


def strip_vlan(frame: bytes) -> tuple[bytes, int]:
    """(frame without its 802.1Q tag, the tag's TCI: priority, DEI, VLAN id) or
    (frame, -1) when untagged. The whole TCI travels, so priority survives a strip."""
    if frame[12:14] == b"\x81\x00":
        return frame[:12] + frame[16:], int.from_bytes(frame[14:16], "big")
    return frame, -1


def insert_vlan(frame: bytes, tci: int) -> bytes:
    """``frame`` with an 802.1Q tag carrying ``tci`` (priority, DEI and VLAN id)."""
    return frame[:12] + b"\x81\x00" + (tci & 0xFFFF).to_bytes(2, "big") + frame[12:]
