"""Signals and clean-up: SIGTERM unwinds like Ctrl-C, and teardown is not interrupted.

A nightly job stopped with SIGTERM, or an impatient second Ctrl-C, must not
leave a lab behind: SIGTERM is turned into KeyboardInterrupt (so every
``finally`` runs), and ``shielded()`` holds SIGINT/SIGTERM back while a
teardown runs; they are delivered when it is done.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_HELD = {signal.SIGINT, signal.SIGTERM}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def sigterm_interrupts() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
