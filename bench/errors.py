"""Errors the bench reports to its user.

Every error a user can cause or meet carries enough context to act on it
(file:line:column and field for bad input; host, command and exit status for
a failed remote action). The CLI prints ``str(error)`` and exits with
``error.exit_status``; no traceback ever reaches the user for these.
"""

from __future__ import annotations


class BenchError(Exception):
    """Base of every error the bench reports to its user."""

    #: Process exit status the CLI uses for this kind of error.
    exit_status = 3


class UsageError(BenchError):
    """Bad input from the user: a topology file, an argument, a name."""

    exit_status = 2


class LabError(BenchError):
    """Bringing a lab up or down failed (a system command, a daemon, a resource)."""


class HostError(BenchError):
    """Something went wrong while talking to one host of the lab."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
