"""Errors of the SSH host driver.

Each error names the lab host it concerns (via :class:`~bench.errors.HostError`)
and carries what a user needs to act on it without re-running anything: the
address and port, the command, its exit status and the tail of its stderr, the
known_hosts file that refused a key. The CLI prints ``str(error)`` as is.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError, HostError

if TYPE_CHECKING:
    from bench.ssh.result import CommandResult

#: How much of a failed command's stderr an error message quotes.
STDERR_TAIL_CHARS = 600


def stderr_tail(stderr: str, limit: int = STDERR_TAIL_CHARS) -> str:
    """The end of ``stderr``, where the reason for a failure usually is."""
    text = stderr.strip()
    if len(text) <= limit:
        return text
    return "..." + text[-limit:]


def describe_command(command: str, limit: int = 200) -> str:
    """A command as quoted in messages: back-quoted and cut if very long."""
    if len(command) > limit:
        command = command[:limit] + "..."
    return f"`{command}`"


def address_port(address: str, port: int) -> str:
    """``address:port`` for messages, with IPv6 addresses bracketed."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def describe_status(status: int) -> str:
    """A hint for shell statuses 129-192, which usually mean "killed by signal N"."""
    try:
        name = signal.Signals(status - 128).name if status > 128 else None
    except ValueError:
        name = None
    return f" (as if killed by {name})" if name else ""


class HostUnreachable(HostError):
    """The TCP connection or the SSH handshake to a host did not succeed."""


class HostKeyMismatch(HostError):
    """The host presented a key other than the one pinned for it.

    This is the symptom of a reinstalled host, a wrong address in the topology
    or an attacker in the path; the bench never decides which, it refuses.
    """

    def __init__(
        self,
        host: str,
        address: str,
        port: int,
        known_hosts: Path,
        *,
        offered: str,
        pinned: str,
    ) -> None:
        super().__init__(
            host,
            f"the host key of {host} ({address_port(address, port)}) does not match the "
            f"pinned key in "
            f"{known_hosts}; the connection was refused "
            f"(host offered {offered}, pinned: {pinned})",
        )
        self.address = address
        self.port = port
        self.known_hosts = known_hosts


class UnknownHostKey(HostError):
    """No key is pinned for the host, so its identity cannot be checked.

    The bench never learns keys on first use: a lab writes known_hosts when it
    creates the host, and a host missing from it is a lab bug.
    """

    def __init__(
        self, host: str, address: str, port: int, known_hosts: Path, looked_up: str
    ) -> None:
        super().__init__(
            host,
            f"no host key is pinned for {host} ({address_port(address, port)}) in {known_hosts} "
            f"(looked up as {looked_up!r}); the connection was refused",
        )
        self.address = address
        self.port = port
        self.known_hosts = known_hosts


class AuthenticationFailed(HostError):
    """The host did not accept the bench's key (or the key could not be loaded)."""


class ConnectionLost(HostError):
    """The SSH connection (or the persistent shell on it) went away mid-use."""


class CommandFailed(HostError):
    """A command exited with a non-zero status where success was required."""

    def __init__(self, result: CommandResult) -> None:
        tail = stderr_tail(result.stderr)
        message = (
            f"{describe_command(result.command)} failed with exit status "
            f"{result.exit_status}{describe_status(result.exit_status)}"
        )
        message += f": {tail}" if tail else " (no stderr)"
        super().__init__(result.host, message)
        self.result = result


class CommandTimeout(HostError):
    """A command did not finish before its deadline and was stopped.

    ``stdout`` and ``stderr`` hold what the command printed before it was
    stopped, which is often the only clue to where it hung.
    """

    def __init__(
        self, host: str, command: str, timeout: float, stdout: str = "", stderr: str = ""
    ) -> None:
        super().__init__(
            host,
            f"{describe_command(command)} did not finish within {timeout:g} s; "
            "the command was stopped (its process group was killed)",
        )
        self.command = command
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


class OutputTimeout(HostError):
    """A spawned process printed no complete line within the time allowed.

    Unlike :class:`CommandTimeout`, the process is left running: waiting for a
    line is a question, not a deadline on the process.
    """


class HostsFailed(BenchError):
    """One operation failed on some hosts of a group; lists every failure.

    ``errors`` maps host name to its error; ``results`` holds the result of
    every host that returned one (including a non-zero status that ``check``
    turned into an error), so a caller can still use them.
    """

    def __init__(
        self,
        what: str,
        errors: Mapping[str, BenchError],
        results: Mapping[str, CommandResult] | None = None,
    ) -> None:
        lines = [f"{what} failed on {len(errors)} host(s):"]
        lines.extend(f"  {error}" for error in errors.values())
        super().__init__("\n".join(lines))
        self.errors = dict(errors)
        self.results = dict(results or {})
