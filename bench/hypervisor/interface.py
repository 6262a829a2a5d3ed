"""What every hypervisor backend offers the bench: guests, their VFs, live migration, events.

The conformance tests and the migration orchestrator speak only this
interface; the emulated hypervisor (``emulated.py``) implements it now, QEMU
and ESXi/libvirt backends implement the same calls. Events are the
hypervisor's own account of what it did, timestamped on its hosts (epoch
seconds), so a timeline can line them up with what the traffic measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Outcome = Literal["completed", "failed", "cancelled"]


@dataclass(frozen=True)
class HypervisorEvent:
    """One step the hypervisor took or saw: ``vf-quiesced``, ``emulation-active``,
    ``stop-and-copy-start``, ``resumed``, ``announce-sent``, ``plugin-loaded``,
    ``passthrough-active``, ``rollback``, ``migration-failed``..."""

    t: float  # epoch seconds, on the host that saw it
    host: str
    name: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HypervisorEvent:
        details = {k: v for k, v in data.items() if k not in ("t", "host", "event")}
        return cls(float(data["t"]), str(data.get("host", "")), str(data["event"]), details)

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "host": self.host, "event": self.name, **self.details}


@dataclass(frozen=True)
class MigrationResult:
    """How one live migration ended, and the guest's events while it ran."""

    guest: str
    source: str
    destination: str
    outcome: Outcome
    reason: str
    #: Where the guest runs afterwards, and how: passthrough or emulation with the reason.
    host: str
    mode: str
    mode_reason: str
    plugin: str | None
    started_at: float
    finished_at: float
    events: tuple[HypervisorEvent, ...]

    @property
    def degraded(self) -> bool:
        """Running on, but in emulation: no (free) VF, or a VF the guest could not use."""
        return self.outcome == "completed" and self.mode != "passthrough"

    def to_json(self) -> dict[str, Any]:
        return {
            "guest": self.guest,
            "source": self.source,
            "destination": self.destination,
            "outcome": self.outcome,
            "reason": self.reason,
            "host": self.host,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "plugin": self.plugin,
            "degraded": self.degraded,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "events": [e.to_json() for e in self.events],
        }


class Hypervisor(Protocol):
    """The calls a hypervisor backend implements (one instance per lab)."""

    def host_of(self, guest: str) -> str:
        """The host ``guest`` runs on now."""

    def start_guest(self, guest: str) -> None:
        """Start ``guest`` (its devices and driver) on the host it is placed on."""

    def stop_guest(self, guest: str) -> None:
        """Stop ``guest``; its VF goes back to the pool."""

    def migrate(
        self, guest: str, destination: str, *, fail_at_destination: bool = False
    ) -> MigrationResult:
        """Live-migrate ``guest`` to host ``destination``; returns when it has ended (or
        rolled back). ``fail_at_destination`` injects a destination failure (LM-05)."""

    def cancel_migration(self, guest: str) -> None:
        """Cancel ``guest``'s migration in progress (from another thread)."""

    def revoke_vf(self, guest: str, *, surprise: bool = False) -> None:
        """Take ``guest``'s VF away: planned (back to emulation) or a surprise removal."""

    def offer_vf(self, guest: str) -> None:
        """Give ``guest`` a VF again (undoes ``revoke_vf``)."""

    def suspend(self, guest: str) -> None: ...

    def resume(self, guest: str) -> None: ...

    def events(self, guest: str) -> list[HypervisorEvent]:
        """``guest``'s events so far, oldest first (they follow the guest across hosts)."""

    def status(self, guest: str) -> dict[str, Any]:
        """What the guest's device reports now (mode, reason, VF, plugin...)."""

    def close(self) -> None:
        """Let go of what the instance holds open (event monitors, consoles)."""
