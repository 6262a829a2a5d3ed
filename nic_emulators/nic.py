"""An emulated SR-IOV NIC: the process behind one ``nics:`` entry of an emulated host.

Run as ``python -m nic_emulators.nic --config FILE`` in the host's network
namespace. One single-threaded loop moves frames between the wire (the host's
uplink interface), the VFs' rings in shared memory and the PF port (vports of
emulated guests), through the embedded switch; the same loop serves the
control socket (VF operations, link, power; ``nic_emulators.nic_ops``) and,
for FPGA models, the CSR socket.

Interrupt moderation: the loop raises at most one interrupt per VF per pass,
and only while the driver has the vector enabled (a NAPI driver disables it
while it polls).
"""

from __future__ import annotations

import contextlib
import selectors
import sys
from pathlib import Path
from typing import Any

from nic_emulators.config import NicConfig, shm_name
from nic_emulators.control import ControlServer
from nic_emulators.eswitch import UPLINK, ESwitch
from nic_emulators.link_watch import LinkWatch
from nic_emulators.models import MODELS
from nic_emulators.ports import PfPort, WirePort
from nic_emulators.process_main import serve
from nic_emulators.tx_fence import TxFences
from nic_emulators.vendors import window as w
from nic_emulators.vendors.engine import DeviceFault
from nic_emulators.vf import VirtualFunction

TX_BUDGET = 64
RSS = w.FEATURE_BITS["rss"]
#: Longest sleep of an idle loop: a backstop for a doorbell lost to a race.
IDLE_WAKE_S = 0.01


class Nic:
    def __init__(self, config: NicConfig) -> None:
        self.config = config
        self.model = MODELS[config.model]
        self.name = f"{config.host}/{config.name}"
        self.run_dir = Path(config.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.selector = selectors.DefaultSelector()
        self.eswitch = ESwitch()
        self.powered = False
        self.link_up = True
        self.stopping = False
        self.vector_pool = config.interrupt_vectors
        self.injected: dict[str, str] = {}  # op -> error message, for failure-injection tests
        self.paused: set[int] = set()  # VFs whose TX rings are not served (flow control)
        self.fences = TxFences()  # VFs whose TX waits for their owner's emulation traffic
        self.vf_features = self.model.features
        self.vfs = [
            VirtualFunction(
                i,
                self.model,
                shm_name(config.lab, config.host, config.name, f"vf{i}"),
                self.run_dir,
            )
            for i in range(config.vfs)
        ]
        self.vf_by_port = {vf.port: vf for vf in self.vfs}
        self.active: list[VirtualFunction] = []
        self.vports: dict[str, str] = {}  # vport port name -> backend socket path
        self.vport_by_peer: dict[str, str] = {}
        self.batches: dict[str, list[bytes]] = {}  # VF port or UPLINK -> frames of this pass
        self.wire = WirePort(config.uplink)
        self.pf = PfPort(self.run_dir / "pf.sock")
        self.selector.register(self.wire, selectors.EVENT_READ, self._from_wire)
        self.selector.register(self.pf, selectors.EVENT_READ, self._from_pf)
        self.cable = LinkWatch(config.uplink, self._carrier_changed)
        self.selector.register(self.cable, selectors.EVENT_READ, self.cable.readable)
        self.carrier = self.cable.up
        self.admin_link = True  # the LINK lever / the CSR link-enable bit
        self.link_up = self.carrier
        from nic_emulators.nic_ops import NicOperations

        self.ops = NicOperations(self)
        self.control = ControlServer(self.selector, self.run_dir / "ctl.sock", self.ops.handle)
        self.csr: Any = None
        self.csr_port = 0
        self.drops = {"link_down": 0, "powered_off": 0}
        if config.powered:
            self.power_on()

    # -- power, link ----------------------------------------------------------

    def power_on(self) -> None:
        if self.powered:
            return
        self.powered = True
        for vf in self.vfs:
            vf.offer(self.vf_features)
            vf.enumerate()
            self.selector.register(vf.doorbell, selectors.EVENT_READ, vf.doorbell.drain)  # type: ignore[union-attr,arg-type]
        self.vector_pool = self.config.interrupt_vectors
        if self.model.csr:
            self._start_csr()
        self.control.publish("power", on=True, nic=self.name, vfs=len(self.vfs))

    def power_off(self) -> None:
        if not self.powered:
            return
        for vf in self.vfs:
            owner = vf.owner
            self._vf_gone(vf)
            if owner:
                self.control.publish(
                    "vf-removed", vf=vf.index, owner=owner, reason="NIC powered off"
                )
        self.powered = False
        if self.csr is not None:
            self.csr.close()
            self.csr = None
        self.control.publish("power", on=False, nic=self.name)

    def _vf_gone(self, vf: VirtualFunction) -> None:
        self._deactivate(vf)
        if vf.port in self.eswitch.ports():
            self.eswitch.remove_port(vf.port)
        if vf.doorbell is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(vf.doorbell)
        vf.vanish()

    def set_link(self, up: bool) -> None:
        """The link as software sets it (the LINK lever, the CSR link-enable bit)."""
        self.admin_link = up
        self._update_link()

    def _carrier_changed(self, up: bool) -> None:
        """The cable: light or signal came or went (an attenuator, a pulled fibre)."""
        self.carrier = up
        self._update_link()

    def _update_link(self) -> None:
        up = self.admin_link and self.carrier
        if up == self.link_up:
            return
        self.link_up = up
        for vf in self.active:
            vf.set_status(up)
        self.control.publish("link", up=up, nic=self.name)

    def _start_csr(self) -> None:
        from nic_emulators.csr.regmap import RegisterMap
        from nic_emulators.csr.server import CsrServer
        from nic_emulators.fpga_board import FpgaBoardView

        # A board keeps its CSR address across power cycles.
        port = self.csr_port or self.config.csr_port
        self.csr = CsrServer(self.selector, RegisterMap(FpgaBoardView(self)), port=port)
        self.csr_port = self.csr.port
        (self.run_dir / "csr.port").write_text(str(self.csr.port))

    # -- steering -------------------------------------------------------------

    def activate(self, vf: VirtualFunction, tx_fence: bool = False) -> None:
        """VF_ACTIVATE: frames for the owner now go to the VF, not to its vport.
        ``tx_fence``: the VF's TX waits for the owner's fence (``tx_fence.py``)."""
        vport = f"vport:{vf.owner}"
        if vport in self.vports:
            self.eswitch.disable(vport)
            # An empty datagram marks the end of what the vport received: the
            # shell takes VF receptions only after it, so nothing is reordered.
            self.pf.send(b"", self.vports[vport])
            if tx_fence and vf.owner:
                self.fences.arm(vf.index, vf.owner)
        self.eswitch.enable(vf.port)
        vf.activate(self.link_up)
        if vf not in self.active:
            self.active.append(vf)

    def _deactivate(self, vf: VirtualFunction) -> None:
        """Take the VF off the data path; its owner's vport (emulation) gets its frames again."""
        if vf in self.active:
            self.active.remove(vf)
        self.fences.clear(vf.index)
        ports = self.eswitch.ports()
        if vf.port in ports:
            self.eswitch.disable(vf.port)
        vport = f"vport:{vf.owner}"
        if vf.owner and vport in self.vports and vport in ports:
            self.eswitch.enable(vport)

    def quiesce(self, vf: VirtualFunction) -> None:
        """VF_QUIESCE: finish what the driver posted, then stop the VF and steer to emulation.

        Without link nothing can be finished: the posted frames stay uncompleted in
        the ring, and the driver sends them another way (the shell, over emulation).
        Nor can what the driver left no completion room for, or the rest of a frame it
        posted only part of: the device finishes what it can and stops, whatever the
        driver did.
        """
        if vf.index in self.fences.armed:  # the owner's emulated frames go first
            self.drain_pf()
        if vf.state == "active" and vf.engine is not None and self.link_up:
            try:
                for queue in range(vf.engine.queues):
                    while vf.engine.tx_ready(queue):
                        frames = vf.engine.poll_tx(queue, TX_BUDGET)
                        if not frames:
                            break
                        self._transmit(vf, frames, queue)
            except DeviceFault as fault:
                self.quarantine(vf, fault)
            self.flush()  # on the wire before the VF counts as quiesced
        self._deactivate(vf)
        if vf.state != "quarantined":
            vf.quiesce()

    def left_posted(self, vf: VirtualFunction) -> int:
        """TX descriptors the driver posted that the device did not take (after a quiesce:
        frames that did not go out, oldest last in the driver's order)."""
        engine = vf.engine
        if engine is None:
            return 0
        try:
            return sum(engine.pending_tx(q) for q in range(engine.queues))
        except DeviceFault:
            return 0  # a tail beyond the ring: nothing of it was ever a frame

    def quarantine(self, vf: VirtualFunction, fault: DeviceFault) -> None:
        owner = vf.owner
        self._deactivate(vf)
        vf.quarantine(fault.code, str(fault))
        print(f"VF {vf.index} ({owner}) quarantined: {fault}", file=sys.stderr, flush=True)
        self.control.publish(
            "vf-error", vf=vf.index, owner=owner, code=fault.code, message=str(fault)
        )

    # -- data path ------------------------------------------------------------

    def _transmit(self, vf: VirtualFunction, frames: list[bytes], queue: int) -> None:
        if not frames:
            return
        counters = vf.totals[queue]
        counters["tx_packets"] += len(frames)
        counters["tx_bytes"] += sum(map(len, frames))
        self._switch(vf.port, frames)
        vf.irq_pending = True

    def _switch(self, port: str, frames: list[bytes]) -> None:
        """Switch frames ``port`` (a VF or vport) sent, in order, and send them on their way."""
        deliveries: list[tuple[str, bytes]] = []
        wire: list[bytes] = []
        self.eswitch.from_port_many(port, frames, deliveries, wire)
        if wire:  # most of a port's frames: straight onto the wire's batch
            self._to_wire(wire)
        if deliveries:
            self._dispatch(deliveries)

    def _to_wire(self, frames: list[bytes]) -> None:
        """Frames for the uplink into the wire's batch (as ``_dispatch`` puts them)."""
        batch = self.batches.get(UPLINK)
        if batch is not None:
            batch += frames
        elif self.link_up and self.powered:  # link and power hold until the flush
            self.batches[UPLINK] = frames
        else:
            self.drops["link_down" if self.powered else "powered_off"] += len(frames)

    def _dispatch(self, deliveries: list[tuple[str, bytes]]) -> None:
        """Send each (port, frame) on its way; frames for VFs and for the wire wait in
        ``batches`` until ``flush`` writes them into the rings, a batch per VF, and onto
        the wire, one batch."""
        batches = self.batches
        for port, frame in deliveries:
            batch = batches.get(port)
            if batch is not None:  # the common case: another frame for a port of this pass
                batch.append(frame)
            elif port == UPLINK:
                self._to_wire([frame])
            elif port in self.vports:
                self.pf.send(frame, self.vports[port])
            elif port in self.vf_by_port:
                batches[port] = [frame]

    def flush(self) -> None:
        """Put what this pass switched where it goes: the wire's batch onto the wire, each
        VF's batch into its RX rings. Every event handler that switches frames ends with
        it, so link, power and port settings are those the frames were switched under."""
        batches, self.batches = self.batches, {}
        wire = batches.pop(UPLINK, None)
        if wire:
            self.wire.send_many(wire)
        for port, frames in batches.items():
            vf = self.vf_by_port[port]
            engine = vf.engine
            if engine is None or vf.state != "active":
                continue
            queues = engine.queues
            if queues > 1 and engine.regs[w.ENABLED_FEATURES] & RSS:
                spread: list[list[bytes]] = [[] for _ in range(queues)]
                for frame in frames:  # RSS on the IPv4 source + destination
                    spread[hash(frame[26:34]) % queues].append(frame)
            else:
                spread = [frames]
            for queue, part in enumerate(spread):
                if not part:
                    continue
                try:
                    delivered, nbytes, no_buffer, too_long = engine.deliver_many(queue, part)
                except DeviceFault as fault:
                    self.quarantine(vf, fault)
                    break
                counters = vf.totals[queue]
                counters["rx_packets"] += delivered
                counters["rx_bytes"] += nbytes
                counters["rx_no_buffer"] += no_buffer
                counters["rx_too_long"] += too_long
                if delivered:
                    vf.irq_pending = True

    def _from_wire(self) -> None:
        frames = self.wire.receive()
        if self.link_up and self.powered:
            deliver, dispatch = self.eswitch.from_uplink, self._dispatch
            for frame in frames:
                dispatch(deliver(frame))
        else:
            self.drops["link_down" if self.powered else "powered_off"] += len(frames)
        self.flush()

    def drain_pf(self) -> None:
        """Process the PF port until nothing waits there."""
        while self.pf.pending():
            self._from_pf()

    def _from_pf(self) -> None:
        """Switch what the vports sent, in order: each run of one vport's frames in one go."""
        by_peer = self.vport_by_peer
        run: list[bytes] = []
        run_port: str | None = None
        for frame, peer in self.pf.receive():
            vport = by_peer.get(peer)
            if not frame:  # a guest's TX fence: what came before it is switched first
                if run_port is not None and run:
                    self._switch(run_port, run)
                run = []
                if vport is not None:
                    self.fences.arrived(vport.removeprefix("vport:"))
                continue
            if vport != run_port:
                if run_port is not None and run:
                    self._switch(run_port, run)
                run, run_port = [], vport
            if vport is not None:  # a frame from a peer no vport has: nowhere to go
                run.append(frame)
        if run_port is not None and run:
            self._switch(run_port, run)
        self.flush()

    def _poll_vfs(self) -> bool:
        busy = False
        if not self.link_up:
            return False  # a MAC without link sends nothing: TX rings wait
        looked = False
        for vf in list(self.active):
            engine = vf.engine
            if engine is None or vf.index in self.paused or self.fences.holds(vf.index):
                continue
            for queue in range(engine.queues):
                try:
                    if not engine.pending_tx(queue):  # the cheap look, every pass
                        continue
                    if not looked:  # once per round, and only with frames to send
                        looked = True
                        if not self.cable.look():
                            return busy  # the frames stay posted, as on a MAC without link
                    frames = engine.poll_tx(queue, TX_BUDGET)
                except DeviceFault as fault:
                    self.quarantine(vf, fault)
                    break
                if frames:
                    busy = True
                    self._transmit(vf, frames, queue)
        return busy

    def _raise_interrupts(self) -> None:
        for vf in self.active:
            if vf.irq_pending and vf.engine is not None:
                vf.irq_pending = False
                regs = vf.engine.regs
                if regs[w.IRQ_ENABLE]:
                    regs[w.IRQ_ENABLE] = 0  # auto-mask until the driver re-enables
                    vf.interrupt.notify()  # type: ignore[union-attr]

    def _idle_timeout(self) -> float:
        """Arm every active VF's doorbell, then make sure nothing slipped in meanwhile."""
        for vf in self.active:
            if vf.engine is not None:
                vf.engine.regs[w.KICK_ARMED] = 1
        if not self.link_up:
            return IDLE_WAKE_S
        for vf in list(self.active):  # a fault found here takes the VF off ``active``
            engine = vf.engine
            if engine is None or vf.index in self.paused or vf.index in self.fences.armed:
                continue
            try:
                if any(engine.tx_ready(q) for q in range(engine.queues)):
                    return 0.0
            except DeviceFault as fault:
                self.quarantine(vf, fault)
        return self.fences.wake_in(IDLE_WAKE_S)

    def run(self) -> None:
        print("READY", flush=True)
        select = self.selector.select
        while not self.stopping:
            busy = self._poll_vfs()
            self.flush()
            self._raise_interrupts()
            registered = self.selector.get_map()
            for key, _ in select(0.0 if busy else self._idle_timeout()):
                if registered.get(key.fd) is key:  # not unregistered by an earlier callback
                    key.data()
            self.flush()
            self._raise_interrupts()

    def close(self) -> None:
        for vf in self.vfs:
            vf.vanish()
        if self.csr is not None:
            self.csr.close()
        self.control.close()
        self.cable.close()
        self.pf.close()
        self.wire.close()
        self.selector.close()
        for leftover in self.run_dir.glob("vf*.*"):
            leftover.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        return {
            "nic": self.name,
            "model": self.model.name,
            "vendor": self.model.vendor,
            "powered": self.powered,
            "link": self.link_up,
            "uplink": self.config.uplink,
            "vfs": [vf.describe() for vf in self.vfs],
            "vports": sorted(self.vports),
            "vectors_free": self.vector_pool,
            "tx_fences": self.fences.describe(),
            "drops": dict(
                self.drops,
                wire_tx_errors=self.wire.tx_errors,
                wire_rx_ring_full=self.wire.ring_drops(),
                pf_tx_errors=self.pf.tx_errors,
            ),
            "csr_port": self.csr.port if self.csr is not None else None,
        }


def main(argv: list[str] | None = None) -> int:
    return serve("python -m nic_emulators.nic", __doc__, NicConfig, Nic, argv)


if __name__ == "__main__":
    sys.exit(main())
