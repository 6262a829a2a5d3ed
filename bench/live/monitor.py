"""The controller's side of a run: the child's output, its progress events and, in
bring-up mode, the user's answers, in one loop.

One ``select`` over the child's output pipe, the event pipe and (while a
question is open) stdin, with a short timeout for the clock. Ctrl-C (or
SIGTERM, which raises the same) does not abandon the child: it gets a moment
to finish its reports (a SIGINT if it did not get the terminal's own), then
SIGKILL, while its output is still read so it never blocks on a full pipe. A
second Ctrl-C kills it at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from bench.live.display import RunDisplay
from bench.live.events import QUIT, RUN, SKIP, split_events

#: After Ctrl-C: how long the child has to stop by itself, then after a SIGINT.
GRACE_S = 2.0
KILL_AFTER_S = 30.0
TICK_S = 0.5


@dataclass
class Questions:
    """Bring-up mode: what to ask before a test and after a failure, and where answers go."""

    gate: int  # write end of the child's gate pipe
    #: How to reach the lab's hosts and instruments, shown after a failure.
    access: Callable[[], str]
    stdin: IO[str] | None = None


def _describe_next(event: dict[str, Any]) -> str:
    ids = ",".join(event.get("catalogue") or []) or "-"
    doc = "\n".join(f"    {line}" for line in str(event.get("doc", "")).splitlines())
    return (
        f"next [{event.get('index')}/{event.get('total')}] {ids} {event['nodeid']}\n"
        + (f"{doc}\n" if doc else "")
        + "[Enter] run it, s skip it, q stop the run: "
    )


def _read_line(fd: int) -> str:
    """One line from ``fd``, read a byte at a time: a buffered reader would take the
    answers to later questions with it, and ``select`` would not see them any more."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return line.decode(errors="replace")


def _answer(line: str) -> str:
    word = line.strip().lower()
    if not line or word in ("q", "quit"):
        return QUIT
    return SKIP if word in ("s", "skip") else RUN


class ChildMonitor:
    """Runs the loop until the child is gone; its exit status (or raises KeyboardInterrupt)."""

    def __init__(
        self,
        child: subprocess.Popen[bytes],
        events: int,
        display: RunDisplay,
        questions: Questions | None = None,
    ) -> None:
        assert child.stdout is not None
        self.child = child
        self.display = display
        self.questions = questions
        self.open_fds = {child.stdout.fileno(): self._output, events: self._events}
        self.events_buffer = b""
        self.asking = False
        self.interrupted_at: float | None = None
        self.sigint_sent = False

    def _output(self, data: bytes) -> None:
        self.display.output(data)

    def _events(self, data: bytes) -> None:
        events, self.events_buffer = split_events(self.events_buffer + data)
        for event in events:
            self.display.event(event)
            if self.questions is None or self.interrupted_at is not None:
                continue
            if event["event"] == "before":
                self._ask(_describe_next(event))
            elif event["event"] == "failed":
                self._ask(
                    f"FAILED ({event.get('when')}): {event['nodeid']}: {event.get('message')}\n"
                    f"{self.questions.access()}\n"
                    "The lab is as the test left it (its teardown has not run). "
                    "[Enter] go on, q stop the run: "
                )

    def _ask(self, text: str) -> None:
        self.display.prompt(text)
        self.asking = True

    def _reply(self) -> None:
        assert self.questions is not None
        stdin = self.questions.stdin or sys.stdin
        answer = _answer(_read_line(stdin.fileno()))
        self.asking = False
        self.display.resume()
        self._send(answer)

    def _send(self, answer: str) -> None:
        assert self.questions is not None
        with contextlib.suppress(OSError):  # the child is gone: nobody is waiting
            os.write(self.questions.gate, f"{answer}\n".encode())

    def _watched(self) -> list[int]:
        fds = list(self.open_fds)
        if self.asking and self.questions is not None:
            fds.append((self.questions.stdin or sys.stdin).fileno())
        return fds

    def _step(self, timeout: float = TICK_S) -> bool:
        """Handle what is ready within ``timeout``; whether anything was."""
        ready, _, _ = select.select(self._watched(), [], [], timeout)
        for fd in ready:
            handler = self.open_fds.get(fd)
            if handler is None:
                self._reply()
                continue
            data = os.read(fd, 65536)
            if data:
                handler(data)
            else:
                del self.open_fds[fd]
        self.display.tick()
        return bool(ready)

    def _drain(self) -> None:
        """The child has exited: read what it left in the pipes (a process it started may
        still hold them open, so stop at the first moment nothing is there)."""
        while self.open_fds and self._step(timeout=0.05):
            pass

    def _escalate(self) -> None:
        """After Ctrl-C: SIGINT after the grace period, SIGKILL after the longer one."""
        if self.interrupted_at is None or self.child.poll() is not None:
            return
        waited = time.monotonic() - self.interrupted_at
        if waited > GRACE_S and not self.sigint_sent:
            self.child.send_signal(signal.SIGINT)  # a SIGTERM to us did not reach it
            self.sigint_sent = True
        elif waited > GRACE_S + KILL_AFTER_S:
            self.child.kill()

    def _interrupt(self) -> None:
        if self.interrupted_at is not None:  # the second Ctrl-C: no more waiting
            self.child.kill()
            return
        self.interrupted_at = time.monotonic()
        if self.asking:
            self.asking = False
            self.display.resume()
        if self.questions is not None:  # a child waiting at the gate reads "quit"
            with contextlib.suppress(OSError):
                os.close(self.questions.gate)
            self.questions = None

    def run(self) -> int:
        while self.open_fds and self.child.poll() is None:
            try:
                self._step()
                self._escalate()
            except KeyboardInterrupt:
                self._interrupt()
        status = self._wait()
        with contextlib.suppress(KeyboardInterrupt):
            self._drain()
        self.display.close()
        if self.interrupted_at is not None:
            raise KeyboardInterrupt
        return status

    def _wait(self) -> int:
        while True:
            try:
                return self.child.wait(timeout=TICK_S)
            except subprocess.TimeoutExpired:
                self._escalate()
            except KeyboardInterrupt:
                self._interrupt()
