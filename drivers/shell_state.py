"""What the parts of the shell share: the state ``Shell.__init__`` sets up, declared once.

``drivers.shell`` builds the ``Shell`` class from parts, each in its own module
(frames, passthrough, guest-side control); each part is a ``ShellState`` and
may use any of it, and the few methods one part calls in another.
"""

from __future__ import annotations

import selectors
from collections import deque
from typing import TYPE_CHECKING, Any

from drivers.emulated_path import EmulatedRings
from drivers.guest_memory import GuestMemory
from drivers.plugin_api import Buffer
from drivers.vf_attachment import VfAttachment
from nic_emulators.config import ShellConfig


class ShellState:
    config: ShellConfig
    memory: GuestMemory
    tap: int
    selector: selectors.BaseSelector
    tap_watched: bool
    counters: dict[str, int]
    vf_rx: int
    vf_rx_bytes: int
    #: Frames read from the TAP straight into guest buffers, not yet posted on a path.
    pending: deque[tuple[Buffer, int]]
    tx_path: str  # emu | vf | hold | to-vf
    vf: VfAttachment | None
    emu: EmulatedRings
    frozen: bool
    large_reads: bool
    plugin_fault: str | None
    installed: dict[str, str]
    reload_next: bool
    nic_fences: bool
    vf_broken: bool
    broken_hold_until: float
    fence_target: int
    fence_deadline: float
    errors: list[str]
    release_mode: str
    release_delay_s: float
    rx_refill: bool
    vf_rx_refilling: bool

    if TYPE_CHECKING:

        def _send_vmx(self, op: str, to: Any = None, **args: Any) -> None: ...
        def _counters(self) -> dict[str, int]: ...
        def _sent(self, item: tuple[int, int], path: str) -> None: ...
        def _from_emu(self, buffer: Buffer, length: int) -> None: ...
        def _transmit(self) -> None: ...
        def _runtime_error(self, reason: str) -> None: ...
