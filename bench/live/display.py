"""Showing a run as it goes: a status line on a terminal, plain lines anywhere else.

Both take the same calls: the child's output (passed through untouched),
progress events, the controller's own messages and a clock tick. On a
terminal the last line is a status line (test n of N, its current step, time
elapsed, failures so far) redrawn in place; the child's output is printed
above it a whole line at a time, so the two never mix. In a log file (nightly
jobs) there is no redrawing: a line per test started and finished instead.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import IO, Any, Protocol

#: Phases the pytest child reports as steps; the plain view leaves them out.
PHASES = frozenset({"setup", "running", "teardown"})


def elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class RunDisplay(Protocol):
    def output(self, data: bytes) -> None: ...
    def event(self, event: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def tick(self) -> None: ...
    def prompt(self, text: str) -> None: ...
    def resume(self) -> None: ...
    def close(self) -> None: ...


class WholeLines:
    """Passes output on a whole line at a time, so lines of our own never land in the
    middle of one of the child's (pytest's row of dots for a test file, say)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.partial = b""

    def complete(self, data: bytes) -> bool:
        """Whether ``data`` completes a line (so writing it prints something)."""
        return b"\n" in data

    def write(self, data: bytes) -> None:
        lines, newline, self.partial = (self.partial + data).rpartition(b"\n")
        if newline:
            self.out.write(lines + newline)
            self.out.flush()

    def close(self) -> None:
        if self.partial:
            self.out.write(self.partial + b"\n")
            self.partial = b""
        self.out.flush()


class _Tally:
    """What both views know: where the run is."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.index = 0
        self.total = 0
        self.nodeid = ""
        self.step = ""
        self.failed = 0

    def update(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        self.total = int(event.get("total", self.total) or self.total)
        if kind == "start":
            self.index, self.nodeid, self.step = int(event.get("index", 0)), event["nodeid"], ""
        elif kind == "step":
            self.step = str(event.get("text", ""))
        elif kind == "finished" and event.get("outcome") in ("failed", "error"):
            self.failed += 1

    @property
    def position(self) -> str:
        return f"[{self.index}/{self.total or '?'}]"

    @property
    def clock(self) -> str:
        return elapsed(time.monotonic() - self.started)


class PlainLines:
    """For logs: the child's output a line at a time, and a line per test started and
    finished."""

    def __init__(self, out: IO[str] | None = None, child_out: IO[bytes] | None = None) -> None:
        self.out = out or sys.stderr
        self.child_out = child_out or sys.stdout.buffer
        self.tally = _Tally()
        self.lines = WholeLines(self.child_out)

    def output(self, data: bytes) -> None:
        self.lines.write(data)

    def event(self, event: dict[str, Any]) -> None:
        self.tally.update(event)
        t, kind = self.tally, event["event"]
        if kind == "start":
            self.message(f"{t.position} {event['nodeid']} (elapsed {t.clock})")
        elif kind == "step" and event.get("text") not in PHASES:
            self.message(f"{t.position} step: {event.get('text')}")
        elif kind == "finished":
            self.message(
                f"{t.position} {event['outcome']} in {event.get('duration', 0):.1f} s: "
                f"{event['nodeid']} (elapsed {t.clock})"
            )

    def message(self, text: str) -> None:
        print(f"npabench: {text}", file=self.out, flush=True)

    def tick(self) -> None:
        """Nothing to redraw in a log."""

    def prompt(self, text: str) -> None:
        self.out.write(f"npabench: {text}")
        self.out.flush()

    def resume(self) -> None:
        """The answer ended the prompt's line."""

    def close(self) -> None:
        self.lines.close()


class StatusLine:
    """For a terminal: whole lines of output above a status line redrawn in place."""

    def __init__(self, out: IO[str] | None = None, child_out: IO[bytes] | None = None) -> None:
        self.out = out or sys.stderr
        self.child_out = child_out or sys.stdout.buffer
        self.tally = _Tally()
        self.lines = WholeLines(self.child_out)
        self.shown = False
        #: A question is on the last line: nothing is drawn over it until it is answered.
        self.asking = False

    def _clear(self) -> None:
        if self.shown:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.shown = False

    def render(self) -> str:
        """The status line's text, cut to the terminal's width."""
        t = self.tally
        parts = [t.position, t.clock, t.nodeid.split("/")[-1] or "starting"]
        if t.step:
            parts.append(t.step)
        if t.failed:
            parts.append(f"{t.failed} failed")
        width = shutil.get_terminal_size((100, 24)).columns - 1
        return " · ".join(parts)[:width]

    def _draw(self) -> None:
        if self.asking:
            return
        self.out.write("\r\x1b[K" + self.render())
        self.out.flush()
        self.shown = True

    def output(self, data: bytes) -> None:
        if self.lines.complete(data):
            self._clear()
            self.lines.write(data)
            self._draw()
        else:
            self.lines.write(data)

    def event(self, event: dict[str, Any]) -> None:
        self.tally.update(event)
        self._draw()

    def message(self, text: str) -> None:
        self._clear()
        print(f"npabench: {text}", file=self.out, flush=True)
        self._draw()

    def tick(self) -> None:
        self._draw()

    def prompt(self, text: str) -> None:
        self._clear()
        self.out.write(f"npabench: {text}")
        self.out.flush()
        self.asking = True

    def resume(self) -> None:
        self.asking = False
        self._draw()

    def close(self) -> None:
        self._clear()
        self.lines.close()


def display_for(stream: IO[str] | None = None) -> RunDisplay:
    """A status line when ``stream`` (stderr) is a terminal, plain lines otherwise."""
    out = stream or sys.stderr
    return StatusLine(out) if out.isatty() else PlainLines(out)
