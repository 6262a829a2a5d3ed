"""The emulation data path: the hypervisor serves the guest's vmxnet3 rings.

Frames the shell posts on the TX ring are copied out of guest memory and sent
through the emulation port — the NIC's PF port (a vport on its embedded
switch) or, on a host whose vSwitch uplink is a plain interface, that
interface. Frames arriving there are copied into the buffers the shell posted
and completed on the RX completion ring. Every frame takes two extra copies
and a process hop compared with passthrough, as emulation does on real hosts.

The backend checks what the guest wrote (indices, addresses, lengths) just as
the NIC does; a violation stops the device (a guest bug never reaches the wire).
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator
from pathlib import Path

from nic_emulators.notify import Fifo
from nic_emulators.ports import BATCH, MAX_FRAME, WirePort, deepen_datagram_queues
from nic_emulators.shm import SharedRegion
from nic_emulators.vmxnet3 import layout as v

MASK = 0xFFFFFFFF


class EmulationFault(Exception):
    pass


class PfVport:
    """This guest's port on the NIC's embedded switch, reached through the PF port socket."""

    def __init__(self, own: Path, pf: str) -> None:
        deepen_datagram_queues()
        self.own, self.pf = own, pf
        with contextlib.suppress(FileNotFoundError):
            own.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(own))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.setblocking(False)
        self.tx_errors = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> Iterator[bytes]:
        recv = self.sock.recv
        for _ in range(BATCH):
            try:
                yield recv(MAX_FRAME)
            except BlockingIOError:
                return

    def send(self, frame: bytes) -> None:
        try:
            self.sock.sendto(frame, self.pf)
        except OSError:
            self.tx_errors += 1

    def send_fence(self) -> bool:
        """The guest's TX fence, as an empty datagram; False if the NIC's queue is full
        (a frame there is a drop, as on a wire; the fence is sent again instead)."""
        try:
            self.sock.sendto(b"", self.pf)
        except BlockingIOError:
            return False
        except OSError:
            self.tx_errors += 1  # the NIC is gone: nobody waits for the fence
        return True

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.own.unlink()


class EmulationBackend:
    """Device side of one guest's vmxnet3 rings."""

    def __init__(self, region: SharedRegion, doorbell: Fifo, interrupt: Fifo) -> None:
        self.region = region
        self.regs = region.view[: v.WINDOW_BYTES].cast("I")
        self.view = region.view
        self.doorbell = doorbell
        self.interrupt = interrupt
        self.memory: SharedRegion | None = None
        self.port: PfVport | WirePort | None = None
        self.tx_next = 0
        self.rx_next = 0
        self.counters = {
            "tx_packets": 0,
            "tx_bytes": 0,
            "rx_packets": 0,
            "rx_bytes": 0,
            "rx_no_buffer": 0,
        }
        self.irq_pending = False
        self.fences = 0  # TX fences passed on to the NIC
        self.mac = b""  # the guest's MAC (filters a plain vSwitch uplink)

    def attach_memory(self, name: str) -> None:
        self.memory = SharedRegion.open(name)

    def poll_tx(self, budget: int = 64) -> int:
        """Send up to ``budget`` posted frames; returns how many."""
        memory = self.memory
        port = self.port
        if memory is None:
            return 0
        regs = self.regs
        pending = (regs[v.TX_PROD] - self.tx_next) & MASK
        if not pending:
            return 0
        if pending > v.RING_SIZE:
            raise EmulationFault(
                f"TX producer {regs[v.TX_PROD]} is {pending} past the device's {self.tx_next}"
            )
        mem, size = memory.view, memory.size
        unpack, view = v.TX_DESC.unpack_from, self.view
        counters = self.counters
        done = 0
        index = self.tx_next
        while done < pending and done < budget:
            address, length, flags = unpack(view, v.TX_RING + (index % v.RING_SIZE) * v.DESC_BYTES)
            if length <= 0 or address + length > size:
                if length == 0 and flags & v.TX_FLAG_FENCE:  # the shell's fence: no frame
                    if isinstance(port, PfVport) and not port.send_fence():
                        break  # posted still: sent on a later poll, after room is made
                    index += 1
                    done += 1
                    self.fences += 1
                    continue
                raise EmulationFault(
                    f"TX descriptor {index}: buffer {address:#x}+{length} outside guest memory"
                )
            frame = bytes(mem[address : address + length])
            if port is not None:
                port.send(frame)
            counters["tx_packets"] += 1
            counters["tx_bytes"] += length
            index += 1
            done += 1
        self.tx_next = index
        regs[v.TX_CONS] = index & MASK
        self.irq_pending = True
        return done

    def deliver(self, frame: bytes) -> bool:
        memory = self.memory
        if memory is None:
            return False
        regs = self.regs
        posted = (regs[v.RX_PROD] - self.rx_next) & MASK
        if posted == 0:
            self.counters["rx_no_buffer"] += 1
            return False
        if posted > v.RING_SIZE:
            raise EmulationFault(
                f"RX producer {regs[v.RX_PROD]} is {posted} past the device's {self.rx_next}"
            )
        slot = (self.rx_next % v.RING_SIZE) * v.DESC_BYTES
        address, buffer_size, buffer_id = v.RX_DESC.unpack_from(self.view, v.RX_RING + slot)
        if address + buffer_size > memory.size or len(frame) > buffer_size:
            raise EmulationFault(
                f"RX descriptor {self.rx_next}: buffer {address:#x}+{buffer_size} unusable"
            )
        memory.view[address : address + len(frame)] = frame
        flags = 0 if frame else v.RX_FLAG_FENCE
        v.RX_COMP.pack_into(self.view, v.RX_COMP_RING + slot, buffer_id, len(frame), flags, 0)
        self.rx_next += 1
        regs[v.RX_CONS] = self.rx_next & MASK
        if frame:  # the NIC's fence is no frame: the guest never sees it
            self.counters["rx_packets"] += 1
            self.counters["rx_bytes"] += len(frame)
        self.irq_pending = True
        return True

    def from_port(self) -> None:
        port = self.port
        if port is None:
            return
        if isinstance(port, PfVport):  # the NIC's embedded switch already filtered
            for frame in port.receive():
                self.deliver(frame)
            return
        own = self.mac  # a vSwitch port of our own: the guest's MAC and group addresses only
        for frame in port.receive():
            if frame[:6] == own or frame[0] & 1:
                self.deliver(frame)

    def drain_port(self) -> None:
        """Deliver everything queued at the port now (before the guest stops)."""
        port = self.port
        while port is not None and select.select([port], [], [], 0)[0]:
            self.from_port()

    def raise_interrupt(self) -> None:
        if self.irq_pending:
            self.irq_pending = False
            if self.regs[v.IRQ_ENABLE]:
                self.regs[v.IRQ_ENABLE] = 0
                self.interrupt.notify()

    def arm(self) -> bool:
        """Arm the doorbell before sleeping; True if work slipped in meanwhile."""
        self.regs[v.KICK_ARMED] = 1
        return self.memory is not None and self.regs[v.TX_PROD] != (self.tx_next & MASK)

    def close(self) -> None:
        self.regs.release()
        if self.memory is not None:
            with contextlib.suppress(BufferError):
                self.memory.close()
        if self.port is not None:
            self.port.close()
