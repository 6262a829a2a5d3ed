"""The progress protocol: one JSON object per line, from the pytest child to the controller.

Events (key ``event``): ``collected`` (``total``), ``start`` (``nodeid``, ``index``,
``total``), ``step`` (``nodeid``, ``text``: a phase or a step a test names),
``finished`` (``nodeid``, ``index``, ``outcome``, ``duration``, ``message``), and in
bring-up mode ``before`` (the next test, with its docstring) and ``failed``
(``nodeid``, ``message``), after which the child waits for an answer line: ``run``,
``skip`` or ``quit``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import IO, Any

#: Answers the controller writes to the child's gate in bring-up mode.
RUN, SKIP, QUIT = "run", "skip", "quit"


class EventWriter:
    """Writes events to a file or pipe (``/dev/fd/N`` from the controller), one line each,
    flushed at once: the controller shows them while the test runs."""

    def __init__(self, path: Path) -> None:
        self._out: IO[str] = path.open("a", buffering=1)

    def emit(self, event: str, **fields: Any) -> None:
        try:
            self._out.write(json.dumps({"event": event, **fields}) + "\n")
            self._out.flush()
        except (OSError, ValueError):  # the controller is gone: the run goes on regardless
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._out.close()


def split_events(buffer: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The complete event lines in ``buffer`` and what is left of an incomplete last line."""
    *lines, rest = buffer.split(b"\n")
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "event" in event:
            events.append(event)
    return events, rest
