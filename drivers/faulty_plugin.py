"""A misbehaving plugin for the containment tests (DP-11): wraps a real one and breaks the contract.

Faults: ``bad-buffer`` (a TX descriptor naming a buffer outside guest memory /
an unknown buffer id), ``outside-ring`` (a tail index beyond the ring),
``no-complete`` (never reports completions, never delivers receptions).
"""

from __future__ import annotations

from typing import Any

from drivers.plugin_api import Buffer, Plugin, SendInfo, SgEntry
from nic_emulators.vendors import window as w

FAULTS = ("bad-buffer", "outside-ring", "no-complete")


class FaultyPlugin:
    def __init__(self, inner: Plugin, window: w.RegisterWindow, fault: str) -> None:
        self.inner, self.window, self.fault = inner, window, fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def add_frame_to_tx_ring(
        self, queue: int, send_info: SendInfo, sgl: list[SgEntry], last_pkt_hint: bool
    ) -> int:
        if self.fault == "bad-buffer":
            bogus = Buffer(10_000_000, 1 << 40, 2048)
            return self.inner.add_frame_to_tx_ring(
                queue, send_info, [SgEntry(bogus, sgl[0].length)], True
            )
        if self.fault == "outside-ring":
            result = self.inner.add_frame_to_tx_ring(queue, send_info, sgl, last_pkt_hint)
            regs = self.window.regs
            regs[w.qreg(queue, w.TX_TAIL)] = (regs[w.qreg(queue, w.TX_HEAD)] + 100_000) & 0xFFFFFFFF
            self.window.kick()
            return result
        return self.inner.add_frame_to_tx_ring(queue, send_info, sgl, last_pkt_hint)

    def check_tx_ring(self, queue: int) -> int:
        return 0 if self.fault == "no-complete" else self.inner.check_tx_ring(queue)

    def check_rx_ring(self, queue: int, max_pkts: int) -> int:
        return 0 if self.fault == "no-complete" else self.inner.check_rx_ring(queue, max_pkts)
