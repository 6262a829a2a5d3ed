"""Guest memory and its buffers: the shell owns every one, and can account for every one.

One shared-memory region holds ``small`` 2 KiB buffers followed by ``large``
64 KiB ones (for TSO frames); a buffer's address is its offset. Every buffer is
always in exactly one place — free, posted to a receive ring, or carrying a
frame being sent — per path (``vf`` or ``emu``); ``audit`` checks that the
places add up to the total, and a buffer handed back twice or by the wrong
party is a plugin error, never silently accepted.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import deque
from itertools import compress

from drivers.plugin_api import Buffer
from nic_emulators.shm import SharedRegion

SMALL = 2048
LARGE = 65536


class BufferError_(Exception):
    """A buffer was returned that was not out (double free, wrong owner)."""


#: Where a buffer is: its code in ``GuestMemory.state`` (0: free).
PLACES = ("free", "vf-rx", "vf-tx", "emu-rx", "emu-tx", "pending")
CODE = {place: code for code, place in enumerate(PLACES)}


class GuestMemory:
    def __init__(self, name: str, small: int, large: int) -> None:
        self.region = SharedRegion.create(name, small * SMALL + large * LARGE)
        self.view = self.region.view
        self.small_count, self.large_count = small, large
        self.buffers = [Buffer(i, i * SMALL, SMALL) for i in range(small)]
        base = small * SMALL
        self.buffers += [Buffer(small + j, base + j * LARGE, LARGE) for j in range(large)]
        self.free_small = list(range(small - 1, -1, -1))
        self.free_large = list(range(small + large - 1, small - 1, -1))
        #: buffer id -> code of the place it is in (``PLACES``); one byte each, cheap to keep.
        self.state = bytearray(small + large)
        #: Every buffer id, made once (``reclaim`` picks from it).
        self.ids = list(range(small + large))
        #: Per buffer, the one-entry iovec list ``read_frames`` hands to ``readv``: made
        #: once, not per frame.
        self.iovecs = [[self.view[b.addr : b.addr + b.size]] for b in self.buffers]

    @property
    def name(self) -> str:
        return self.region.name

    def take(self, place: str, large: bool = False) -> Buffer | None:
        pool = self.free_large if large else self.free_small
        if not pool:
            return None
        index = pool.pop()
        self.state[index] = CODE[place]
        return self.buffers[index]

    def take_many(self, place: str, count: int) -> list[Buffer]:
        """Up to ``count`` small buffers into ``place`` (fewer when fewer are free), in the
        order ``count`` calls of ``take`` would give them: one slice, not a call each."""
        pool = self.free_small
        n = min(count, len(pool))
        if n <= 0:
            return []
        ids = pool[-n:]
        del pool[-n:]
        ids.reverse()
        state, code, buffers = self.state, CODE[place], self.buffers
        for index in ids:
            state[index] = code
        return [buffers[index] for index in ids]

    def read_frames(
        self, fd: int, limit: int, place: str, large: bool, into: deque[tuple[Buffer, int]]
    ) -> int:
        """Read up to ``limit`` frames from ``fd`` (a TAP: one frame a read) straight into
        free buffers, as a NIC's DMA writes them; each (buffer, length) goes onto ``into``,
        its buffer in ``place``. Stops when ``fd`` has no more or no buffer is free;
        returns how many were read. The guest's hot send path: one ``readv`` a frame and
        nothing else that costs."""
        pool = self.free_large if large else self.free_small
        state, buffers, iovecs, code = self.state, self.buffers, self.iovecs, CODE[place]
        append, pop = into.append, pool.pop
        read = 0
        readv = os.readv
        while read < limit and pool:
            index = pool[-1]
            try:
                length = readv(fd, iovecs[index])
            except BlockingIOError:
                break
            pop()
            state[index] = code
            append((buffers[index], length))
            read += 1
        return read

    def give_back(self, buffer_id: int, place: str) -> None:
        """Return a buffer from ``place``; BufferError_ if it was not there."""
        state = self.state
        if not 0 <= buffer_id < len(state) or state[buffer_id] != CODE[place]:
            found = PLACES[state[buffer_id]] if 0 <= buffer_id < len(state) else "not a buffer"
            raise BufferError_(f"buffer {buffer_id} returned from {place} but it is {found}")
        state[buffer_id] = 0
        (self.free_small if buffer_id < self.small_count else self.free_large).append(buffer_id)

    def give_back_sent(self, sent: deque[tuple[int, int]], count: int, place: str) -> int:
        """Return the first ``count`` (buffer id, length) of ``sent`` (all from ``place``),
        taking them off it; returns their bytes. BufferError_ (and nothing returned past
        it) if one was not there. The batch form of ``give_back``, for TX completions."""
        state, code, small, popleft = self.state, CODE[place], self.small_count, sent.popleft
        free_small, free_large = self.free_small, self.free_large
        nbytes = 0
        for _ in range(count):
            buffer_id, length = popleft()
            if state[buffer_id] != code:
                self.give_back(buffer_id, place)  # raises, saying where it is
            state[buffer_id] = 0
            (free_small if buffer_id < small else free_large).append(buffer_id)
            nbytes += length
        return nbytes

    def move(self, buffer_id: int, source: str, target: str) -> None:
        """A buffer changes hands (a read frame is posted on a path)."""
        state = self.state
        if state[buffer_id] != CODE[source]:
            raise BufferError_(
                f"buffer {buffer_id} moved from {source} but it is {PLACES[state[buffer_id]]}"
            )
        state[buffer_id] = CODE[target]

    def reclaim(self, *places: str) -> int:
        """Take back every buffer in ``places`` (the path went away); returns how many.

        A switch to emulation reclaims a whole VF's rings (thousands of buffers) while
        the guest's frames wait, so this is a few passes in C over the state bytes,
        not a call per buffer."""
        pick = bytearray(256)  # state code -> 1 for the places taken back
        for place in places:
            pick[CODE[place]] = 1
        ids = list(compress(self.ids, self.state.translate(pick)))
        clear = bytearray(range(256))  # state code -> 0 (free) for the same places
        for place in places:
            clear[CODE[place]] = 0
        self.state[:] = self.state.translate(clear)
        small = bisect_left(ids, self.small_count)
        self.free_small += ids[:small]
        self.free_large += ids[small:]
        return len(ids)

    def audit(self) -> dict[str, int]:
        """Where the buffers are; ``balanced`` is 1 when free + out == total, no id twice free."""
        state = self.state
        free = len(self.free_small) + len(self.free_large)
        total = self.small_count + self.large_count
        out = {place: state.count(CODE[place]) for place in PLACES[1:]}
        unique = len(set(self.free_small) | set(self.free_large)) == free == state.count(0)
        return {
            "total": total,
            "free": free,
            **out,
            "balanced": int(unique and free + sum(out.values()) == total),
        }

    def close(self) -> None:
        for (view,) in self.iovecs:
            view.release()
        self.region.close()
