"""The outcome of one remote command."""

from __future__ import annotations

from dataclasses import dataclass

from bench.ssh.errors import CommandFailed


@dataclass(frozen=True)
class CommandResult:
    """What a command did on a host: status, output and how long it took.

    A non-zero status is a result, not an error: a test often expects failure.
    Call :meth:`check` where success is required, so the error then names the
    host, the command and the stderr that explains it.
    """

    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    #: Wall-clock seconds from sending the command to having all its output.
    duration: float

    @property
    def ok(self) -> bool:
        """Whether the command exited with status 0."""
        return self.exit_status == 0

    def check(self) -> CommandResult:
        """Return ``self`` if the command succeeded, raise :class:`CommandFailed` if not."""
        if not self.ok:
            raise CommandFailed(self)
        return self
