"""Errors raised by the SCPI instrument drivers.

Every instrument error names the instrument (topology name and VISA resource)
so that a failure on a bench with five instruments says which one failed.
Error-queue failures also carry the commands of the group and every queued
error, because SCPI reports errors after the fact and the user needs both
sides to see which command caused which error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.errors import BenchError, UsageError


@dataclass(frozen=True)
class ScpiErrorEntry:
    """One entry of an instrument's error queue, as read with ``SYST:ERR?``."""

    code: int
    text: str

    def __str__(self) -> str:
        return f'{self.code},"{self.text}"'


class InstrumentError(BenchError):
    """An instrument refused a command, reported errors, or could not be driven.

    ``errors`` holds the entries drained from the error queue (empty when the
    failure is not an error-queue failure), ``commands`` the commands sent.
    """

    def __init__(
        self,
        instrument: str,
        message: str,
        *,
        commands: Sequence[str] = (),
        errors: Sequence[ScpiErrorEntry] = (),
    ) -> None:
        super().__init__(f"{instrument}: {message}")
        self.instrument = instrument
        self.commands = tuple(commands)
        self.errors = tuple(errors)

    @classmethod
    def from_queue(
        cls, instrument: str, commands: Sequence[str], errors: Sequence[ScpiErrorEntry]
    ) -> InstrumentError:
        """Build the error for a command group after which the queue held ``errors``."""
        sent = "; ".join(commands) if commands else "(no command)"
        listed = "; ".join(str(e) for e in errors)
        return cls(
            instrument,
            f"instrument reported {len(errors)} error(s) after [{sent}]: {listed}",
            commands=commands,
            errors=errors,
        )

    @property
    def codes(self) -> tuple[int, ...]:
        """The SCPI error codes of the queued errors, in queue order."""
        return tuple(e.code for e in self.errors)


class InstrumentIdentityError(InstrumentError):
    """``*IDN?`` did not match the model the topology expects."""


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer in time; the session was reopened."""


class InstrumentConnectionError(InstrumentError):
    """The instrument could not be reached at its resource string."""


class InstrumentConnectionLost(InstrumentConnectionError):
    """The connection dropped; the next call reopens it."""


class InstrumentBusy(InstrumentError):
    """Another process (or another driver object) holds the instrument."""


class ChannelOutOfRange(InstrumentError, UsageError):
    """A channel number outside the instrument's channels (checked locally)."""
