"""A device process's part in live migration: leaving with a guest, or taking one in.

``VmxProcess`` holds one ``GuestRelocation``. As a source it runs the
``OutgoingMigration`` sequence for ``migrate`` (``cancel-migration`` stops
it) and, once the guest has moved on, forgets it. As a destination (a
config with ``incoming``) it takes the migration stream, installs the state
it carries, and on the shell's ``hello`` with ``resume`` announces the guest
and takes over the guest's device socket. Both keep the guest's event log
(``events``), which travels with the guest.
"""

from __future__ import annotations

import contextlib
import selectors
from typing import TYPE_CHECKING, Any, ClassVar

from nic_emulators.control import DEFERRED, Connection, ControlError, Deferred
from nic_emulators.frames import rarp
from nic_emulators.vmxnet3.migration import IncomingMigration, OutgoingMigration

if TYPE_CHECKING:
    from nic_emulators.vmxnet3.process import VmxProcess


class GuestRelocation:
    """Migration state of one device process (source, destination, or neither)."""

    OPS: ClassVar[frozenset[str]] = frozenset({"migrate", "cancel-migration", "events"})

    def __init__(self, process: VmxProcess) -> None:
        self.process = process
        #: A migrated guest's events from the hosts it ran on before.
        self.inherited_events: list[dict[str, Any]] = []
        self.outgoing: OutgoingMigration | None = None
        self.incoming: IncomingMigration | None = None
        config = process.config
        if config.incoming:
            self.incoming = IncomingMigration(
                process.selector, config.incoming, self.load, process.record,
                fail=config.fail_incoming, events=self.take_events,
            )  # fmt: skip
            process.device.reason = "incoming migration"
            self.stop(True)  # nothing moves until the guest is here (it may still stay away)
            process.record("incoming-listening", address=self.incoming.address)
        else:
            process.record("device-started")

    @property
    def gone(self) -> bool:
        """The guest was handed over to another host."""
        return self.outgoing is not None and self.outgoing.handed_over

    def events(self) -> list[dict[str, Any]]:
        return self.inherited_events + self.process.events

    def status(self) -> dict[str, Any]:
        return {
            "instance": self.process.config.instance,
            "incoming": self.incoming.address if self.incoming else None,
            "incoming_state": self.incoming.state if self.incoming else None,
            "migrating": self.outgoing is not None and not self.gone,
            "handed_over": self.gone,
        }

    def handle(
        self, conn: Connection, request_id: int, op: str, args: dict[str, Any]
    ) -> dict[str, Any] | Deferred:
        if op == "events":
            return {"events": self.events()}
        if op == "migrate":
            return self.migrate(conn, request_id, args)
        if self.outgoing is None or self.gone:
            raise ControlError("no migration of this guest is in progress here", "ENOENT")
        self.outgoing.cancel()
        return {"cancelling": True}

    # -- the source -----------------------------------------------------------

    def migrate(self, conn: Connection, request_id: int, args: dict[str, Any]) -> Deferred:
        process = self.process
        if self.outgoing is not None or (self.incoming is not None and process.shell is None):
            raise ControlError("this device is already migrating", "EBUSY")
        migration = OutgoingMigration(
            process.device,
            process.record,
            self.state,
            lambda: bytes(process.backend.region.view),
            self.stop,
            events=self.events,
            moved_away=self.moved_away,
            target=str(args["to"]),
            dest_socket=str(args["socket"]),
            release_timeout_s=float(args.get("release_timeout_s", 10.0)),
        )

        def finished(result: dict[str, Any] | None, error: str | None) -> None:
            del result
            if migration.handed_over:
                outcome = "completed"
                self.forget_guest()
            else:
                if self.outgoing is migration:
                    self.outgoing = None
                outcome = "cancelled" if migration.cancelled else "failed"
            conn.answer(
                request_id,
                {
                    "outcome": outcome,
                    "reason": error or "",
                    "mode": process.device.mode,
                    "events": self.events(),
                },
            )
            process.react()

        self.outgoing = migration  # before start: a sequence may end inside it
        try:
            process.device.start("migration", migration.sequence(), finished)
        except ControlError:
            self.outgoing = None
            raise
        return DEFERRED

    def moved_away(self) -> bool:
        """Whether another device took over the guest's device socket (its driver is there)."""
        control = self.process.control
        try:
            return control.path.stat().st_ino != control.inode
        except FileNotFoundError:
            return False

    def stop(self, stop: bool) -> None:
        """Stop (or restart) moving frames: the guest is stopped for stop-and-copy.

        What reached the device's port before the stop is delivered into the guest's
        RX ring first, to be copied with it: a hypervisor's I/O thread keeps delivering
        while its migration thread pre-copies; this process does both in turn, so what
        arrived meanwhile waits in the port's queue, and would be lost with it."""
        process = self.process
        if stop == process.stopped:
            return
        port = process.backend.port
        if stop and port is not None:
            process.backend.drain_port()
        process.stopped = stop
        if port is not None:
            if stop:
                process.selector.unregister(port)
            else:
                process.selector.register(port, selectors.EVENT_READ, process.backend.from_port)

    def forget_guest(self) -> None:
        """The guest runs elsewhere now: its vport leaves this host's NIC at once, so the
        NIC drops what still comes for its MAC instead of queueing it to nobody."""
        process = self.process
        nic = process.device.nic
        if nic is not None and process.config.nic_pf_port:
            with contextlib.suppress(ControlError, OSError):
                nic.call("VPORT_DEL", guest=process.config.guest)
        process.device.reason = "migrated away"

    def state(self) -> dict[str, Any]:
        """What the destination needs to carry the guest on (JSON)."""
        process = self.process
        device, backend, config = process.device, process.backend, process.config
        port = None
        if device.nic is not None and config.nic_pf_port:
            with contextlib.suppress(ControlError):
                port = device.nic.call("PORT_CONFIG", port=f"vport:{config.guest}")
        return {
            "guest": config.guest,
            "memory": device.memory_name,
            "port": port,
            "filters": process.filters,
            "device": {
                "suspended": device.suspended,
                "memory_reserved": device.memory_reserved,
                "required_features": sorted(device.required_features),
                "history": device.history[-20:],
                "saved": device.saved,
            },
            "backend": {
                "tx_next": backend.tx_next,
                "rx_next": backend.rx_next,
                "counters": backend.counters,
            },
            "events": self.events(),
        }

    # -- the destination --------------------------------------------------------

    def load(self, state: dict[str, Any], region: bytes, final: bool) -> None:
        """Install what the source sent: settings at pre-copy, rings and positions at the end."""
        process = self.process
        device, backend, config = process.device, process.backend, process.config
        self.inherited_events = list(state.get("events", []))
        process.filters = dict(state.get("filters") or process.filters)
        flags = state.get("device", {})
        device.suspended = bool(flags.get("suspended", False))
        device.memory_reserved = bool(flags.get("memory_reserved", True))
        device.required_features = frozenset(flags.get("required_features", ()))
        device.saved = flags.get("saved")
        if state.get("port") and device.nic is not None and config.nic_pf_port:
            # the port as the source NIC had it (filters, VLANs, MTU...), under this NIC's policy
            device.nic.call("PORT_SET_CONFIG", port=f"vport:{config.guest}", config=state["port"])
        backend.region.view[: len(region)] = region
        if final:
            device.history = list(flags.get("history", [])) + device.history
            positions = state["backend"]
            backend.tx_next = int(positions["tx_next"])
            backend.rx_next = int(positions["rx_next"])
            backend.counters.update(positions["counters"])
            device.memory_name = str(state["memory"])
            backend.attach_memory(device.memory_name)

    def take_events(self, events: list[dict[str, Any]]) -> None:
        """The source's log up to its hand-over (what it recorded after the final copy)."""
        if events:
            self.inherited_events = events

    def check_resumable(self) -> None:
        if self.incoming is None or self.incoming.state not in ("loaded", "done"):
            raise ControlError("no migrated device state is loaded here", "EINVAL")

    def resumed(self) -> None:
        """The guest runs here now: announce it and take over the guest's device socket."""
        process = self.process
        self.stop(False)
        if self.incoming is not None:
            self.incoming.close_listener()
        process.record("resumed")
        port = process.backend.port
        if port is not None:
            port.send(rarp(process.config.mac))
            process.record("announce-sent", kind="RARP")
        process.announced = process.device.mode
        process.control.move_to(process.run_dir / "vmx.sock")
        reason = process.device.inactive_reason()
        if reason:
            process.record("passthrough-inactive", reason=reason)

    def close(self) -> None:
        if self.incoming is not None:
            self.incoming.close()
