"""The NPA plugin interface, version 1.1: what a vendor plugin provides and what the shell gives it.

A plugin is a module ``drivers.plugins.<name>`` with:

* ``PLUGIN_NAME`` (the name GET_INFO reports), ``VENDOR``, ``VERSION`` ("major.minor";
  the shell loads it only when the major version equals the VF's), ``API_VERSION``
  (this module's ``API_VERSION`` it was written against);
* ``plugin_entry(window, info, services) -> Plugin`` — the single entry point
  that fills in the plugin functions. ``window`` is the VF's register window
  and ring memory (``nic_emulators.vendors.window.RegisterWindow``), ``info``
  the GET_INFO record (queues, ring size, features the shell enabled),
  ``services`` the shell services below. Nothing else: the plugin makes no OS
  call and owns no buffer.

Plugin functions (ESX NPA names in snake case): ``sw_init``,
``reinit_rx_ring(q)``, ``reinit_tx_ring(q)``, ``enable_interrupt(vec)``,
``disable_interrupt(vec)``, ``add_frame_to_tx_ring(q, send_info, sgl,
last_pkt_hint)`` (0 queued, 1 ring full — the shell requeues), ``check_tx_ring(q)``
(reports completions through ``complete_send``; a TSO frame counts once),
``check_rx_ring(q, max_pkts)`` (delivers through ``indicate_recv``),
``add_buffers_to_rx_ring(q)``.

Shell services: ``alloc_small_buffer()``, ``alloc_large_buffer()`` (a ``Buffer``
or None when none is free), ``alloc_small_buffers(n)`` (API 1.1: up to ``n`` at
once, fewer when fewer are free), ``indicate_recv(buffer, length, info)``,
``complete_send(q, n)``, ``log(level, message)``. The shell can take the data
path away at any moment; reinit functions never return buffers (the shell has
already reclaimed them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

API_VERSION = "1.1"

TX_QUEUED = 0
TX_RING_FULL = 1


class Buffer(NamedTuple):
    """A guest buffer: id, guest-memory address, size in bytes."""

    id: int
    addr: int
    size: int


class SgEntry(NamedTuple):
    """One piece of a frame to send: the buffer holding it and the bytes used."""

    buffer: Buffer
    length: int


@dataclass(frozen=True)
class SendInfo:
    """Per-frame offload requests (only features the shell enabled are ever asked)."""

    length: int = 0
    csum: bool = False
    vlan: int | None = None
    mss: int = 0  # TSO when > 0


PLAIN_SEND = SendInfo()


@dataclass(frozen=True)
class RecvInfo:
    vlan: int | None = None  # tag stripped by the VF
    csum_ok: bool = False
    rss_hash: int = 0


NO_RECV_INFO = RecvInfo()


@dataclass(frozen=True)
class VfInfo:
    """What GET_INFO reported and the shell negotiated, as the plugin may read it."""

    vendor: str
    plugin: str
    version: str
    queues: int
    ring_size: int
    features: frozenset[str]  # enabled: offered by the VF AND used by the shell
    opaque: dict[str, Any]
    #: The guest's small-buffer table (base address, stride, count), for vendors whose
    #: descriptors name buffer ids that the device resolves against a registered table.
    buffer_table: tuple[int, int, int] = (0, 2048, 0)


class ShellServices(Protocol):
    def alloc_small_buffer(self) -> Buffer | None: ...
    def alloc_small_buffers(self, count: int) -> list[Buffer]: ...  # API 1.1
    def alloc_large_buffer(self) -> Buffer | None: ...
    def indicate_recv(self, buffer: Buffer, length: int, info: RecvInfo) -> None: ...
    def complete_send(self, queue: int, count: int) -> None: ...
    def log(self, level: str, message: str) -> None: ...


class Plugin(Protocol):
    def sw_init(self) -> None: ...
    def reinit_rx_ring(self, queue: int) -> None: ...
    def reinit_tx_ring(self, queue: int) -> None: ...
    def enable_interrupt(self, vector: int) -> None: ...
    def disable_interrupt(self, vector: int) -> None: ...
    def add_frame_to_tx_ring(
        self, queue: int, send_info: SendInfo, sgl: list[SgEntry], last_pkt_hint: bool
    ) -> int: ...
    def check_tx_ring(self, queue: int) -> int: ...
    def check_rx_ring(self, queue: int, max_pkts: int) -> int: ...
    def add_buffers_to_rx_ring(self, queue: int) -> int: ...


class PluginRefused(Exception):
    """The shell will not load this plugin for this VF (wrong vendor, version or API)."""
