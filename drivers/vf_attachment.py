"""The shell's hold on one VF: the plugin, the VF's window and notifications, frames in flight."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

from drivers.plugin_api import Plugin, ShellServices, VfInfo
from nic_emulators.notify import Fifo
from nic_emulators.shm import SharedRegion
from nic_emulators.vendors import window as w

#: Features the shell can use in passthrough (the TAP carries plain frames, so the
#: guest's own stack does checksums and segmentation; VLAN stripping and RSS are used).
SHELL_FEATURES = frozenset({"vlan", "rss"})


class VfAttachment:
    def __init__(
        self,
        info: dict[str, Any],
        module: ModuleType,
        services: ShellServices,
        buffer_table: tuple[int, int, int],
    ) -> None:
        self.info = info
        self.region = SharedRegion.open(str(info["region"]))
        self.doorbell = Fifo(Path(info["doorbell"]))
        self.interrupt = Fifo(Path(info["interrupt"]))
        self.window = w.RegisterWindow(self.region.view, self.doorbell.notify)
        offered = frozenset(info["features"])
        self.features = offered & SHELL_FEATURES
        self.vf_info = VfInfo(
            vendor=str(info["vendor"]),
            plugin=str(info["plugin"]),
            version=str(info["plugin_version"]),
            queues=int(info["queues"]),
            ring_size=int(info["ring_size"]),
            features=self.features,
            opaque=dict(info.get("opaque") or {}),
            buffer_table=buffer_table,
        )
        self.plugin: Plugin = module.plugin_entry(self.window, self.vf_info, services)
        self.queues = self.vf_info.queues
        #: per queue: (buffer id, length) of frames handed to the plugin, oldest first.
        self.outstanding: list[deque[tuple[int, int]]] = [deque() for _ in range(self.queues)]
        self.last_progress = 0.0

    def start(self, now: float) -> None:
        plugin = self.plugin
        plugin.sw_init()
        for queue in range(self.queues):
            plugin.add_buffers_to_rx_ring(queue)
        plugin.enable_interrupt(0)
        self.last_progress = now

    def in_flight(self) -> int:
        return sum(len(q) for q in self.outstanding)

    def quarantined(self) -> bool:
        return bool(self.window.regs[w.STATUS] & w.STATUS_QUARANTINED)

    def close(self) -> None:
        self.window.release()
        self.doorbell.close()
        self.interrupt.close()
        self.region.close()
