"""The shell's buffer accounting: a reclaim takes back exactly the buffers of the places named."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from drivers.guest_memory import BufferError_, GuestMemory


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
