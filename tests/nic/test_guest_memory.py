"""The shell's buffer accounting: a reclaim takes back exactly the buffers of the places named;
frames are read straight into free buffers; TX completions give back exactly what was sent."""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Iterator

import pytest

from drivers.guest_memory import BufferError_, GuestMemory
from drivers.plugin_api import Buffer


@pytest.fixture
def memory() -> Iterator[GuestMemory]:
    mem = GuestMemory(f"npt-test-mem-{os.getpid()}", small=64, large=4)
    yield mem
    mem.close()


def test_reclaim_takes_back_exactly_the_named_places(memory: GuestMemory) -> None:
    vf_rx = [memory.take("vf-rx") for _ in range(10)]
    vf_tx = [memory.take("vf-tx") for _ in range(5)]
    vf_large = [memory.take("vf-tx", large=True) for _ in range(2)]
    emu_rx = [memory.take("emu-rx") for _ in range(7)]
    pending = memory.take("pending")
    assert None not in (*vf_rx, *vf_tx, *vf_large, *emu_rx, pending)

    assert memory.reclaim("vf-rx", "vf-tx") == 17

    audit = memory.audit()
    assert (audit["vf-rx"], audit["vf-tx"], audit["emu-rx"], audit["pending"]) == (0, 0, 7, 1)
    assert audit["free"] == 64 + 4 - 8
    assert audit["balanced"] == 1, audit
    # the reclaimed ones are free again, in the pool of their size; the others are not
    with pytest.raises(BufferError_):
        memory.give_back(vf_rx[0].id, "vf-rx")  # type: ignore[union-attr]
    memory.give_back(emu_rx[0].id, "emu-rx")  # type: ignore[union-attr]
    taken = {memory.take("vf-rx").id for _ in range(64 - 7)}  # type: ignore[union-attr]
    assert {b.id for b in vf_rx + vf_tx} <= taken  # type: ignore[union-attr]
    assert memory.take("vf-rx") is None  # every small buffer is out again
    large = {memory.take("vf-tx", large=True).id for _ in range(4)}  # type: ignore[union-attr]
    assert {b.id for b in vf_large} <= large  # type: ignore[union-attr]
    assert memory.audit()["balanced"] == 1


def test_reclaim_of_nothing_changes_nothing(memory: GuestMemory) -> None:
    memory.take("emu-rx")
    before = memory.audit()
    assert memory.reclaim("vf-rx", "vf-tx") == 0
    assert memory.audit() == before


def test_read_frames_reads_one_frame_a_buffer_until_the_fd_is_empty(memory: GuestMemory) -> None:
    # a datagram socket, like a TAP, gives one frame per read
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        frames = [bytes([n]) * (60 + n) for n in range(5)]
        for frame in frames:
            theirs.send(frame)
        got: deque[tuple[Buffer, int]] = deque()
        assert memory.read_frames(ours.fileno(), 64, "pending", False, got) == 5
        assert [memory.view[b.addr : b.addr + n].tobytes() for b, n in got] == frames
        assert len({b.id for b, _ in got}) == 5
        assert memory.audit()["pending"] == 5
        assert memory.audit()["balanced"] == 1
        # nothing left to read: nothing taken
        assert memory.read_frames(ours.fileno(), 64, "pending", False, got) == 0
        assert memory.audit()["pending"] == 5


def test_read_frames_stops_at_the_limit_and_when_no_buffer_is_free(memory: GuestMemory) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        for n in range(6):
            theirs.send(bytes([n]) * 64)
        got: deque[tuple[Buffer, int]] = deque()
        assert memory.read_frames(ours.fileno(), 2, "pending", True, got) == 2
        assert all(b.size == 65536 for b, _ in got)  # large buffers asked for
        assert memory.read_frames(ours.fileno(), 64, "pending", True, got) == 2  # 4 large
        assert memory.audit()["free"] == 64  # the small ones untouched
        # the frames not read wait in the socket, in order
        assert ours.recv(100) == bytes([4]) * 64


def test_give_back_sent_returns_the_first_count_and_their_bytes(memory: GuestMemory) -> None:
    sent: deque[tuple[int, int]] = deque()
    for length in (100, 200, 300):
        sent.append((memory.take("vf-tx").id, length))  # type: ignore[union-attr]
    sent.append((memory.take("vf-tx", large=True).id, 4000))  # type: ignore[union-attr]
    third = sent[2]
    assert memory.give_back_sent(sent, 2, "vf-tx") == 300
    assert sent[0] == third
    assert memory.audit()["vf-tx"] == 2
    assert memory.give_back_sent(sent, 2, "vf-tx") == 4300
    assert not sent
    audit = memory.audit()
    assert (audit["vf-tx"], audit["free"], audit["balanced"]) == (0, 68, 1)


def test_give_back_sent_refuses_a_buffer_that_is_not_in_the_place(memory: GuestMemory) -> None:
    emu = memory.take("emu-tx")
    sent = deque([(emu.id, 60)])  # type: ignore[union-attr]
    with pytest.raises(BufferError_, match="is emu-tx"):
        memory.give_back_sent(sent, 1, "vf-tx")
    assert memory.audit()["emu-tx"] == 1  # not taken back


def test_take_many_gives_what_take_would_in_the_same_order(memory: GuestMemory) -> None:
    twin = GuestMemory(f"npt-test-mem-twin-{os.getpid()}", small=64, large=4)
    try:
        one_by_one = [twin.take("vf-rx") for _ in range(10)]
        assert memory.take_many("vf-rx", 10) == one_by_one
        assert memory.audit()["vf-rx"] == 10
        # fewer than asked when fewer are free, then none; large buffers are never taken
        assert len(memory.take_many("emu-rx", 100)) == 54
        assert memory.take_many("emu-rx", 5) == []
        assert memory.take_many("emu-rx", 0) == []
        audit = memory.audit()
        assert (audit["vf-rx"], audit["emu-rx"], audit["free"]) == (10, 54, 4)
        assert audit["balanced"] == 1, audit
        # each is in its place: given back from there, and from nowhere else
        memory.give_back(one_by_one[0].id, "vf-rx")  # type: ignore[union-attr]
        with pytest.raises(BufferError_):
            memory.give_back(one_by_one[1].id, "emu-rx")  # type: ignore[union-attr]
    finally:
        twin.close()
