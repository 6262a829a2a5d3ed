"""One virtual function: its BAR region, notifications, ring engine and lifecycle.

States and the VF operations that move between them (ARCHITECTURE.md)::

    free --ACQUIRE--> acquired --INIT--> ready --ACTIVATE--> active
    active --QUIESCE--> quiesced --RELEASE--> free      (SAVE_STATE in quiesced)
    any --fault--> quarantined --RELEASE--> free
    any --surprise removal / power off--> absent        (gone until re-enumerated)

An operation in the wrong state is refused with EINVAL naming both states.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from nic_emulators.control import ControlError
from nic_emulators.models import NicModel
from nic_emulators.notify import Fifo
from nic_emulators.shm import SharedRegion
from nic_emulators.vendors import alpha_layout, beta_layout
from nic_emulators.vendors import window as w
from nic_emulators.vendors.alpha import AlphaEngine
from nic_emulators.vendors.beta import BetaEngine
from nic_emulators.vendors.engine import QueueEngine

ENGINES: dict[str, type[QueueEngine]] = {
    "alpha": AlphaEngine,
    "beta": BetaEngine,
    "gamma": AlphaEngine,
}
RING_BYTES = {
    "alpha": alpha_layout.rings_bytes,
    "beta": beta_layout.rings_bytes,
    "gamma": alpha_layout.rings_bytes,
}

COUNTER_NAMES = ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "rx_no_buffer", "rx_too_long")


class VirtualFunction:
    def __init__(self, index: int, model: NicModel, shm_name: str, run_dir: Path) -> None:
        self.index = index
        self.model = model
        self.port = f"vf{index}"
        self.shm_name = shm_name
        self.run_dir = run_dir
        self.state = "absent"
        self.owner: str | None = None
        self.vectors = 0
        self.fault: dict[str, str] | None = None
        self.region: SharedRegion | None = None
        self.memory: SharedRegion | None = None
        self.engine: QueueEngine | None = None
        self.doorbell: Fifo | None = None
        self.interrupt: Fifo | None = None
        self.irq_pending = False
        self.features = model.features
        self.totals = [dict.fromkeys(COUNTER_NAMES, 0) for _ in range(model.queues)]
        self.last_read = [dict.fromkeys(COUNTER_NAMES, 0) for _ in range(model.queues)]

    # -- enumeration ----------------------------------------------------------

    def enumerate(self) -> None:
        """Make the VF exist (NIC power-on / VF enable): its BAR and notification FIFOs."""
        size = w.WINDOW_BYTES + RING_BYTES[self.model.vendor](
            self.model.queues, self.model.ring_size
        )
        self.region = SharedRegion.create(self.shm_name, size)
        regs = self.region.view[: w.WINDOW_BYTES].cast("I")
        regs[w.NUM_QUEUES] = self.model.queues
        regs[w.RING_SIZE] = self.model.ring_size
        regs[w.FEATURES] = w.feature_mask(self.features)
        regs.release()
        self.doorbell = Fifo(self.run_dir / f"vf{self.index}.db", create=True)
        self.interrupt = Fifo(self.run_dir / f"vf{self.index}.irq", create=True)
        self.state = "free"

    def vanish(self) -> None:
        """Surprise removal or power loss: everything of the VF goes away at once."""
        self._drop_engine()
        for fifo in (self.doorbell, self.interrupt):
            if fifo is not None:
                fifo.close()
        self.doorbell = self.interrupt = None
        if self.region is not None:
            self.region.close()
            self.region = None
        self.state = "absent"
        self.owner = None
        self.vectors = 0

    def offer(self, features: frozenset[str]) -> None:
        self.features = features
        if self.region is not None:
            regs = self.region.view[: w.WINDOW_BYTES].cast("I")
            regs[w.FEATURES] = w.feature_mask(features)
            regs.release()

    def offered_features(self) -> frozenset[str]:
        return self.features

    def enabled_features(self) -> frozenset[str]:
        if self.region is None:
            return frozenset()
        regs = self.region.view[: w.WINDOW_BYTES].cast("I")
        try:
            return w.feature_names(regs[w.ENABLED_FEATURES])
        finally:
            regs.release()

    # -- operations -----------------------------------------------------------

    def need(self, op: str, *states: str) -> None:
        if self.state not in states:
            raise ControlError(
                f"VF {self.index} is {self.state}; {op} needs it {' or '.join(states)}", "EINVAL"
            )

    def acquire(self, owner: str, vectors: int) -> None:
        self.need("VF_ACQUIRE", "free")
        self.owner, self.vectors, self.fault = owner, vectors, None
        self.state = "acquired"

    def info(self) -> dict[str, Any]:
        return {
            "vf": self.index,
            "region": self.shm_name,
            "doorbell": str(self.run_dir / f"vf{self.index}.db"),
            "interrupt": str(self.run_dir / f"vf{self.index}.irq"),
            "vendor": self.model.vendor,
            "plugin": self.model.plugin,
            "plugin_version": self.model.plugin_version,
            "opaque": {"model": self.model.name},
            "queues": self.model.queues,
            "ring_size": self.model.ring_size,
            "features": sorted(self.offered_features()),
            "vectors": self.vectors,
        }

    def init(self, memory_name: str, saved: dict[str, Any] | None) -> None:
        """Map the guest's memory for DMA and reset (or restore) the rings."""
        self.need("VF_INIT", "acquired", "ready", "quiesced")
        assert self.region is not None
        self._drop_engine()
        region = self.region.view
        regs = region[: w.WINDOW_BYTES].cast("I")
        for word in range(w.QUEUE_BASE, w.QUEUE_BASE + w.MAX_QUEUES * w.QUEUE_WORDS):
            regs[word] = 0
        for word in (w.STATUS, w.ERROR, w.KICK_ARMED, w.ENABLED_FEATURES, w.RX_BUF_SIZE):
            regs[word] = 0
        regs.release()
        region[w.WINDOW_BYTES :] = bytes(len(region) - w.WINDOW_BYTES)
        try:
            self.memory = SharedRegion.open(memory_name)
        except OSError as err:
            raise ControlError(f"VF_INIT: guest memory {memory_name}: {err}", "ENOENT") from err
        engine = ENGINES[self.model.vendor](
            region, self.memory.view, self.model.queues, self.model.ring_size
        )
        if saved:
            engine.restore(saved)
        self.engine = engine
        self.state = "ready"

    def activate(self, link_up: bool) -> None:
        self.need("VF_ACTIVATE", "ready", "quiesced")
        self.state = "active"
        self.set_status(link_up)

    def quiesce(self) -> None:
        self.need("VF_QUIESCE", "active", "ready")
        self.state = "quiesced"
        self.set_status(False)

    def save_state(self) -> dict[str, Any]:
        self.need("VF_SAVE_STATE", "quiesced", "ready")
        assert self.engine is not None
        return {"rings": self.engine.save_state(), "counters": self.counters()}

    def release(self) -> None:
        self.need("VF_RELEASE", "acquired", "ready", "quiesced", "quarantined")
        self._drop_engine()
        self.owner, self.vectors = None, 0
        self.state = "free"

    def quarantine(self, code: str, message: str) -> None:
        self.state = "quarantined"
        self.fault = {"code": code, "message": message}
        if self.region is not None:
            regs = self.region.view[: w.WINDOW_BYTES].cast("I")
            regs[w.STATUS] = w.STATUS_QUARANTINED
            regs[w.ERROR] = 1
            regs.release()

    def set_status(self, link_up: bool) -> None:
        if self.region is None:
            return
        regs = self.region.view[: w.WINDOW_BYTES].cast("I")
        status = (w.STATUS_ACTIVE if self.state == "active" else 0) | (
            w.STATUS_LINK_UP if link_up else 0
        )
        regs[w.STATUS] = status
        regs.release()

    def _drop_engine(self) -> None:
        if self.engine is not None:
            self.engine.release()
            self.engine = None
        if self.memory is not None:
            with contextlib.suppress(BufferError):
                self.memory.close()
            self.memory = None

    # -- counters -------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        total = dict.fromkeys(COUNTER_NAMES, 0)
        for queue in self.totals:
            for name, value in queue.items():
                total[name] += value
        return total

    def read_deltas(self) -> list[dict[str, int]]:
        """GET_QUEUE_STATS: per queue, what changed since the previous call."""
        deltas = []
        for now, before in zip(self.totals, self.last_read, strict=True):
            deltas.append({name: now[name] - before[name] for name in COUNTER_NAMES})
            before.update(now)
        return deltas

    def describe(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "vf": self.index,
            "state": self.state,
            "owner": self.owner,
            "offered": sorted(self.features),
            "enabled": sorted(self.enabled_features()),
        }
        if self.fault:
            status["fault"] = self.fault
        if self.engine is not None:
            status["queues"] = self.engine.queue_status()
        status["counters"] = self.counters()
        return status
