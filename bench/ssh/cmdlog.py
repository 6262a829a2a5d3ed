"""The per-host command log: what the bench did on a host, for a human.

When a test fails, the first question is what actually ran on the host and
what it answered. The log answers it without re-running anything: one record
per command with its UTC start time, exit status, duration and output
(spawned processes get one record when they start and one when they end). It is
plain, line-buffered text (``tail -f`` works while the bench runs) and output
is truncated, because a record is for reading, not for archiving a 1 GB dump.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from bench.ssh.result import CommandResult

#: Characters of stdout (and, separately, stderr) kept per record: this many
#: from the start and this many from the end.
KEEP_CHARS = 4096


def _timestamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _truncate(text: str, keep: int = KEEP_CHARS) -> str:
    if len(text) <= 2 * keep:
        return text
    omitted = len(text) - 2 * keep
    return f"{text[:keep]}\n[... {omitted} characters omitted ...]\n{text[-keep:]}"


def _command_lines(command: str) -> list[str]:
    first, *rest = command.split("\n")
    return [f"$ {first}"] + [f"> {line}" for line in rest]


def _stream(name: str, text: str) -> list[str]:
    if not text:
        return [f"-- {name}: (empty)"]
    lines = [f"-- {name} ({len(text)} chars):", _truncate(text).rstrip("\n")]
    if not text.endswith("\n"):
        lines.append("(no newline at end)")
    return lines


class CommandLog:
    """Appends records to one host's log file; does nothing without a path.

    Thread-safe: records from concurrent threads never interleave.
    """

    def __init__(self, host: str, path: Path | None) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def _write(self, header: str, body: list[str], started: datetime | None = None) -> None:
        if self._file is None:
            return
        when = _timestamp(started or datetime.now(UTC))
        text = "\n".join([f"== {when} {self._host} {header}", *body]) + "\n\n"
        with self._lock:
            if self._file is not None:
                self._file.write(text)

    def note(self, message: str) -> None:
        """Record an event that is not a command (connected, closed, ...)."""
        self._write(message, [])

    def command(self, result: CommandResult, kind: str = "run", at_end: bool = False) -> None:
        """Record a finished command, stamped with its start (or, if ``at_end``, now)."""
        started = None if at_end else datetime.now(UTC) - timedelta(seconds=result.duration)
        header = f"{kind} exit={result.exit_status} duration={result.duration * 1000:.3f} ms"
        body = [
            *_command_lines(result.command),
            *_stream("stdout", result.stdout),
            *_stream("stderr", result.stderr),
        ]
        self._write(header, body, started)

    def failure(
        self,
        kind: str,
        command: str,
        error: Exception,
        duration: float,
        *,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        """Record a command that produced no result (timeout, lost connection)."""
        started = datetime.now(UTC) - timedelta(seconds=duration)
        body = [*_command_lines(command), f"-- error: {error}"]
        if stdout or stderr:
            body += [*_stream("stdout so far", stdout), *_stream("stderr so far", stderr)]
        self._write(f"{kind} FAILED duration={duration * 1000:.3f} ms", body, started)

    def spawned(self, command: str, pid: int) -> None:
        """Record the start of a long-running process."""
        self._write(f"spawn pid={pid}", _command_lines(command))

    def stopped(self, result: CommandResult, pid: int, how: str) -> None:
        """Record the end of a spawned process, stamped with the time it ended."""
        self.command(result, kind=f"spawned pid={pid} {how}", at_end=True)

    def close(self) -> None:
        """Close the file; later records are dropped."""
        with self._lock:
            if self._file is not None:
                self._file.close()
            self._file = None
