"""The guest's TX fence on a switch to passthrough: the shell posts it on the emulated TX
ring behind its last frames, the vmxnet3 backend passes it on to the NIC as an empty
datagram in their order (over a real UNIX datagram socket, the NIC's PF port), and the
NIC's ``TxFences`` keeps the VF's TX waiting until it has come (or gives up)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.emulated_path import EmulatedRings
from drivers.guest_memory import GuestMemory
from nic_emulators.notify import Fifo
from nic_emulators.shm import SharedRegion
from nic_emulators.tx_fence import TxFences
from nic_emulators.vmxnet3 import layout as v
from nic_emulators.vmxnet3.backend import EmulationBackend, EmulationFault, PfVport

# -- the NIC's bookkeeping (a state machine: no process needed) ---------------------------


def test_a_fence_holds_its_vf_until_its_owner_s_fence_arrives() -> None:
    fences = TxFences(wait_s=60.0)
    fences.arm(3, "vm1")
    fences.arm(5, "vm2")
    assert fences.holds(3) and fences.holds(5)
    assert not fences.holds(4)  # never armed

    fences.arrived("vm9")  # another guest's fence releases nothing
    assert fences.holds(3) and fences.holds(5)
    fences.arrived("vm1")
    assert not fences.holds(3)
    assert fences.holds(5)
    assert fences.describe() == {"waiting": 1, "passed": 1, "timed_out": 0}


def test_a_fence_that_never_comes_is_given_up_at_its_deadline_and_counted() -> None:
    fences = TxFences(wait_s=0.05)
    fences.arm(1, "vm1")
    assert fences.holds(1)
    assert 0.0 < fences.wake_in(1.0) <= 0.05  # an idle NIC wakes for the deadline
    deadline = time.monotonic() + 5.0
    while fences.holds(1):
        assert time.monotonic() < deadline, "the fence was never given up"
        time.sleep(fences.wake_in(1.0))
    assert fences.describe() == {"waiting": 0, "passed": 0, "timed_out": 1}
    assert fences.wake_in(1.0) == 1.0


def test_a_vf_that_leaves_the_data_path_waits_for_nothing() -> None:
    fences = TxFences(wait_s=60.0)
    fences.arm(2, "vm1")
    fences.clear(2)
    assert not fences.holds(2)
    fences.arrived("vm1")  # a late fence finds nothing to release
    assert fences.describe() == {"waiting": 0, "passed": 0, "timed_out": 0}


# -- the emulation path: shell rings -> vmxnet3 backend -> the NIC's PF port ---------------


@dataclass
class Path_:
    rings: EmulatedRings
    backend: EmulationBackend
    memory: GuestMemory
    nic: socket.socket


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path_]:
    tag = f"npt-test-fence-{os.getpid()}"
    memory = GuestMemory(f"{tag}-mem", small=64, large=1)
    region = SharedRegion.create(f"{tag}-vmx", v.REGION_BYTES)
    backend = EmulationBackend(
        region,
        Fifo(tmp_path / "vmx.db", create=True),
        Fifo(tmp_path / "vmx.irq", create=True),
    )
    backend.attach_memory(memory.name)
    nic = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nic.bind(str(tmp_path / "pf.sock"))
    nic.setblocking(False)
    backend.port = PfVport(tmp_path / "vport.sock", str(tmp_path / "pf.sock"))
    rings = EmulatedRings(region.name, str(tmp_path / "vmx.db"), str(tmp_path / "vmx.irq"), memory)
    yield Path_(rings, backend, memory, nic)
    rings.close()
    backend.port.close()
    nic.close()
    backend.close()
    backend.doorbell.close()
    backend.interrupt.close()
    region.close()
    memory.close()


def post(p: Path_, payload: bytes) -> int:
    buffer = p.memory.take("emu-tx")
    assert buffer is not None
    p.memory.view[buffer.addr : buffer.addr + len(payload)] = payload
    assert p.rings.send(buffer, len(payload))
    return buffer.id


def received(nic: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(nic.recv(4096))
        except BlockingIOError:
            return out


def test_the_fence_reaches_the_nic_between_the_frames_posted_before_and_after_it(
    path: Path_,
) -> None:
    before = [post(path, b"A" * 60), post(path, b"B" * 61)]
    assert path.rings.send_fence()
    after = post(path, b"C" * 62)
    path.rings.flush()

    assert path.backend.poll_tx() == 4
    assert received(path.nic) == [b"A" * 60, b"B" * 61, b"", b"C" * 62]
    # the fence is no frame: not counted, and it held no buffer
    assert path.backend.counters["tx_packets"] == 3
    assert path.backend.fences == 1
    completed: list[int] = []
    assert path.rings.reclaim(lambda buffer_id, _length: completed.append(buffer_id)) == 4
    assert completed == [*before, after]


def test_a_fence_the_nic_cannot_take_yet_stays_posted_and_goes_on_the_next_poll(
    path: Path_,
) -> None:
    # Fill the port's send queue (the NIC reads nothing meanwhile): a frame that does not
    # fit is a drop, as on a wire, but the fence must not be lost (the VF's TX would wait
    # for it until the NIC gave up).
    port = path.backend.port
    assert isinstance(port, PfVport)
    port.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    queued = 0
    try:
        while queued < 100_000:
            port.sock.sendto(b"x" * 1000, port.pf)
            queued += 1
    except BlockingIOError:
        pass
    assert 0 < queued < 100_000
    post(path, b"A" * 60)
    assert path.rings.send_fence()
    path.rings.flush()

    assert path.backend.poll_tx() == 1  # the frame is taken (and dropped); the fence waits
    assert port.tx_errors == 1
    assert path.backend.fences == 0
    assert path.backend.regs[v.TX_CONS] == 1

    assert len(received(path.nic)) == queued  # the NIC makes room
    assert path.backend.poll_tx() == 1
    assert received(path.nic) == [b""]
    assert path.backend.fences == 1
    assert path.backend.regs[v.TX_CONS] == 2


def test_a_fence_without_its_flag_is_a_zero_length_frame_and_a_fault(path: Path_) -> None:
    v.TX_DESC.pack_into(path.rings.view, v.TX_RING, 0, 0, 0)
    path.rings.tx_prod += 1
    path.rings.flush()
    with pytest.raises(EmulationFault, match="outside guest memory"):
        path.backend.poll_tx()
