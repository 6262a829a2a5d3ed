"""Asking a guest, in the background, whether its net_failover holds a primary (or has
let go of it).

The bench learns that the moment it happens from the guest kernel's own word
(``bench.qemu.kernel_log``). Asking the guest on its console is the fallback for a word
that came before the bench listened; but a console question can take most of a second
under TCG while the guest is busy (just resumed, under traffic). Asked in the caller's
thread, it would hold back the reaction to a word that arrives meanwhile. So the
question runs in a thread of its own, and the caller waits on the kernel's word and on
the answer at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: How often the guest is asked while its kernel's word can be heard (it is the backup).
ASK_GUEST_S = 0.25
#: ... and while it cannot (then asking is all there is).
ASK_UNHEARD_S = 0.005
#: How often a caller waiting for the kernel's word also looks whether an answer came.
WORD_SLICE_S = 0.01


class PrimaryAsker:
    """Calls ``holds()`` (the question) until the answer is ``want`` or it is stopped.

    ``found`` is then the last time the answer was otherwise (epoch seconds; ``since`` if
    it never was): the earliest the guest can have changed. ``error`` is what a
    question raised, if one did. ``heard()`` says whether the kernel's word can be heard
    now (the guest is then asked only every ``ASK_GUEST_S``).
    """

    def __init__(
        self,
        holds: Callable[[], bool],
        since: float,
        heard: Callable[[], bool],
        want: bool = True,
    ) -> None:
        self._holds = holds
        self._want = want
        self._heard = heard
        self._stop = threading.Event()
        self.otherwise_at = since
        self.found: float | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._ask, name="ask-primary", daemon=True)

    def __enter__(self) -> PrimaryAsker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # no join: a question under way finishes on its own (the console serialises it
        # with the caller's next one), and its answer is no longer wanted
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait for the question under way, if any, to end (after the block)."""
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self.found is not None or self.error is not None

    def _ask(self) -> None:
        while not self._stop.wait(ASK_GUEST_S if self._heard() else ASK_UNHEARD_S):
            try:
                held = self._holds()
            except BaseException as err:  # handed to the caller, who raises it
                self.error = err
                return
            if self._stop.is_set():
                return
            if held == self._want:
                self.found = self.otherwise_at
                return
            self.otherwise_at = time.time()
