"""A SCPI instrument driven over VISA (pyvisa with the pyvisa-py ``@py`` backend).

Real instruments and the bench's emulators are driven through this very code
path: a VISA resource string, a TCP socket, newline-terminated SCPI. The
class adds what raw pyvisa lacks for unattended benches:

* ``*IDN?`` is checked against the model the topology expects, so a swapped
  cable or a wrong address fails at open, not halfway through a run;
* SCPI reports errors after the fact, so the error queue is drained after
  every *command group* and turned into an :class:`InstrumentError` that
  names the commands and every queued error;
* after a timeout the session is closed and reopened on the next call, so a
  late reply to the timed-out query can never be read as the answer to the
  next one (pyvisa-py's ``viClear`` on a socket only discards what arrived in
  the next 100 ms; a new connection discards everything);
* a dropped connection is reported as such (pyvisa-py reports it as a
  timeout on read and as ``BrokenPipeError`` on write) and reopened next call;
* one user at a time: a thread lock per driver object and an ``flock`` lock
  file per resource, so two bench processes cannot drive one instrument.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self

import pyvisa
from pyvisa.constants import StatusCode
from pyvisa.resources import MessageBasedResource

from bench.instruments.errors import (
    ChannelOutOfRange,
    InstrumentConnectionError,
    InstrumentConnectionLost,
    InstrumentError,
    InstrumentIdentityError,
    InstrumentTimeout,
    ScpiErrorEntry,
)
from bench.instruments.resource_lock import ResourceLock

_log = logging.getLogger(__name__)


#: More queued errors than this means the queue never empties (a broken instrument).
_MAX_QUEUE_DRAIN = 64

_ERROR_ANSWER = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


@dataclass(frozen=True)
class Identity:
    """The four fields of an IEEE 488.2 ``*IDN?`` answer."""

    manufacturer: str
    model: str
    serial: str
    firmware: str
    raw: str

    @classmethod
    def parse(cls, answer: str) -> Identity:
        fields = [f.strip() for f in answer.split(",")] + ["", "", "", ""]
        return cls(fields[0], fields[1], fields[2], fields[3], answer.strip())


class ScpiInstrument:
    """A SCPI instrument at a VISA resource string; see the module docstring.

    ``expected_model`` is a substring or regular expression the ``*IDN?``
    answer must contain (None: no check). Use as a context manager, or call
    :meth:`open` and :meth:`close`.
    Every method is thread-safe; a command group holds the instrument for
    its whole duration so that another thread's errors never mix with it.
    """

    #: Topology ``kind:`` of the driver (set by :func:`bench.instruments.registry.register`).
    kind: ClassVar[str] = "scpi"

    #: Read and write termination used on the wire.
    termination: ClassVar[str] = "\n"

    def __init__(
        self,
        resource: str,
        *,
        name: str | None = None,
        expected_model: str | None = None,
        timeout_s: float = 5.0,
        log_path: Path | None = None,
        lock_dir: Path | None = None,
        lock_wait_s: float = 2.0,
    ) -> None:
        self.resource = resource
        self.name = name or resource
        self.expected_model = expected_model
        self.timeout_s = timeout_s
        self.log_path = log_path
        self.lock_wait_s = lock_wait_s
        self.identity: Identity | None = None
        self._process_lock = ResourceLock(resource, lock_dir)
        self._lock = threading.RLock()
        self._rm: pyvisa.ResourceManager | None = None
        self._session: MessageBasedResource | None = None
        self._log_file: IO[str] | None = None
        self._is_open = False
        self._group: list[str] | None = None
        self._resync = False
        #: Errors found in the queue before the first command group after open, a
        #: timeout or a drop: they belong to an earlier session or the failed exchange
        #: (e.g. -410 Query INTERRUPTED), not to the next group, so they are kept here.
        self.stale_errors: list[ScpiErrorEntry] = []

    @property
    def label(self) -> str:
        """How errors name this instrument: topology name and resource."""
        return self.name if self.name == self.resource else f"{self.name} ({self.resource})"

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> Self:
        """Lock the resource, connect, and check ``*IDN?`` against the expected model."""
        with self._lock:
            if self._is_open:
                return self
            self._process_lock.acquire(self.label, self.name, self.lock_wait_s)
            try:
                if self.log_path is not None:
                    self.log_path.parent.mkdir(parents=True, exist_ok=True)
                    self._log_file = self.log_path.open("a", encoding="utf-8")
                self._is_open = True
                self._resync = True  # errors queued before we came belong to someone else
                self._connect()
                self.identity = Identity.parse(self.query("*IDN?"))
                self._check_identity(self.identity)
            except BaseException:
                self.close()
                raise
            return self

    def close(self) -> None:
        """Disconnect and release the lock; safe to call twice."""
        with self._lock:
            self._disconnect()
            self._is_open = False
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            self._process_lock.release()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_identity(self, identity: Identity) -> None:
        if self.expected_model is None:
            return
        expected = self.expected_model
        try:
            matched = expected in identity.raw or re.search(expected, identity.raw) is not None
        except re.error:
            matched = False
        if not matched:
            raise InstrumentIdentityError(
                self.label,
                f"*IDN? does not match the expected model: expected {self.expected_model!r}, "
                f"seen {identity.raw!r} -- wrong resource string or wrong instrument?",
                commands=["*IDN?"],
            )

    def _connect(self) -> MessageBasedResource:
        if self._session is not None:
            return self._session
        try:
            self._rm = self._rm or pyvisa.ResourceManager("@py")
            res = self._rm.open_resource(
                self.resource,
                read_termination=self.termination,
                write_termination=self.termination,
                timeout=round(self.timeout_s * 1000),
            )
        except Exception as exc:
            raise InstrumentConnectionError(
                self.label, f"cannot open VISA resource {self.resource}: {exc}"
            ) from exc
        if not isinstance(res, MessageBasedResource):
            res.close()
            raise InstrumentConnectionError(
                self.label, f"{self.resource} is not a message-based (SCPI) resource"
            )
        self._session = res
        self._note("#", "connected")
        return res

    def _disconnect(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.close()
            self._session = None
            self._note("#", "disconnected")
        if self._rm is not None:
            with contextlib.suppress(Exception):
                self._rm.close()
            self._rm = None

    def _socket(self) -> socket.socket | None:
        """The TCP socket under a pyvisa-py session, if there is one."""
        if self._session is None or self._rm is None:
            return None
        sessions = getattr(self._rm.visalib, "sessions", {})
        sock = getattr(sessions.get(self._session.session), "interface", None)
        return sock if isinstance(sock, socket.socket) else None

    def _peer_closed(self) -> bool:
        """Whether the instrument closed the connection (EOF or reset pending)."""
        return self._pending_bytes() is None

    def _pending_bytes(self) -> bytes | None:
        """What already waits unread on the socket (``b""`` if nothing); None once closed."""
        sock = self._socket()
        if sock is None:
            return b""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return b""
            data = sock.recv(4096, socket.MSG_PEEK)
        except (OSError, ValueError):
            return None
        return data or None

    def _discard_unsolicited(self, session: MessageBasedResource, command: str) -> None:
        """Drop bytes nobody asked for (e.g. a query sent with write()) before a query.

        Otherwise they would be read as the answer to ``command``.
        """
        pending = self._pending_bytes()
        if pending:
            session.clear()
            self._note("!", f"discarded unsolicited {pending!r} before {command}")
            _log.warning("%s: discarded unsolicited %r before %s", self.label, pending, command)

    # -- traffic -----------------------------------------------------------

    def _note(self, direction: str, text: str) -> None:
        _log.debug("%s %s %s", self.name, direction, text)
        if self._log_file is not None:
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            self._log_file.write(f"{stamp} {direction} {text}\n")
            self._log_file.flush()

    def _transact(self, command: str, *, reply: bool) -> str:
        with self._lock:
            if not self._is_open:
                raise InstrumentError(self.label, f"not open (command {command!r})")
            session = self._connect()
            if self._peer_closed():
                self._disconnect()
                self._resync = True
                self._note("!", f"connection lost before {command}")
                raise InstrumentConnectionLost(
                    self.label,
                    f"connection to {self.resource} was closed by the instrument before "
                    f"{command!r} was sent; the next call reconnects",
                    commands=[command],
                )
            if self._group is not None:
                self._group.append(command)
            if reply:
                self._discard_unsolicited(session, command)
            self._note(">", command)
            try:
                session.write(command)
                answer = session.read() if reply else ""
            except pyvisa.VisaIOError as exc:
                raise self._io_failure(command, exc) from exc
            except OSError as exc:
                self._disconnect()
                self._resync = True
                self._note("!", f"connection lost: {exc}")
                raise InstrumentConnectionLost(
                    self.label,
                    f"connection to {self.resource} lost during {command!r}: {exc}; "
                    "the next call reconnects",
                    commands=[command],
                ) from exc
            if reply:
                self._note("<", answer)
            return answer.strip()

    def _absorb_stale_errors(self) -> None:
        """Before the first group after open or a failure, drain older errors.

        Without this, the -410 an interrupted query leaves behind would be
        reported against the next command group, which did nothing wrong. It
        runs at the next group, not at reconnect, so that commands written
        meanwhile (e.g. clearing a delay fault) go first.
        """
        self._resync = False
        stale = self.read_errors()
        if stale:
            self.stale_errors = stale
            self._note("!", "left by the failed exchange: " + "; ".join(str(e) for e in stale))

    def _io_failure(self, command: str, exc: pyvisa.VisaIOError) -> InstrumentError:
        """Turn a VISA I/O error into the bench error, dropping the session."""
        lost = self._peer_closed()
        self._disconnect()
        self._resync = True
        if exc.error_code == StatusCode.error_timeout and not lost:
            self._note("!", f"timeout after {self.timeout_s:g} s on {command}")
            return InstrumentTimeout(
                self.label,
                f"no answer to {command!r} from {self.resource} within {self.timeout_s:g} s; "
                "session reopened so a late reply cannot be taken for the next answer",
                commands=[command],
            )
        self._note("!", f"connection lost on {command}: {exc}")
        return InstrumentConnectionLost(
            self.label,
            f"connection to {self.resource} lost during {command!r} ({exc.abbreviation}); "
            "the next call reconnects",
            commands=[command],
        )

    def write(self, command: str) -> None:
        """Send one command without reading an answer (errors show at group end)."""
        self._transact(command, reply=False)

    def query(self, command: str) -> str:
        """Send one query and return its answer without the termination."""
        return self._transact(command, reply=True)

    def query_float(self, command: str) -> float:
        """Query and parse the answer as a number, naming the answer if it is not one."""
        answer = self.query(command)
        try:
            return float(answer)
        except ValueError:
            raise InstrumentError(
                self.label, f"answer to {command!r} is not a number: {answer!r}", commands=[command]
            ) from None

    def query_bool(self, command: str) -> bool:
        """Query and parse ``1|0|ON|OFF``."""
        answer = self.query(command).upper()
        if answer in {"1", "ON", "+1"}:
            return True
        if answer in {"0", "OFF", "+0"}:
            return False
        raise InstrumentError(
            self.label, f"answer to {command!r} is not a boolean: {answer!r}", commands=[command]
        )

    # -- error queue and command groups -------------------------------------

    def read_errors(self) -> list[ScpiErrorEntry]:
        """Drain the error queue with ``SYST:ERR?`` until ``0,...``."""
        errors: list[ScpiErrorEntry] = []
        for _ in range(_MAX_QUEUE_DRAIN):
            answer = self._transact("SYST:ERR?", reply=True)
            match = _ERROR_ANSWER.match(answer)
            if match is None:
                raise InstrumentError(
                    self.label, f"malformed answer to 'SYST:ERR?': {answer!r}", errors=errors
                )
            code = int(match.group(1))
            if code == 0:
                return errors
            errors.append(ScpiErrorEntry(code, match.group(2)))
        raise InstrumentError(
            self.label,
            f"error queue did not empty after {_MAX_QUEUE_DRAIN} reads",
            errors=errors,
        )

    @contextlib.contextmanager
    def commands(self) -> Iterator[None]:
        """A command group: on exit, drain the error queue and raise what it held.

        Groups nest; only the outermost drains. If the body raises, its error
        propagates and the queue is not read (the session may be gone).
        """
        with self._lock:
            if self._group is not None:
                yield
                return
            if self._resync:
                self._absorb_stale_errors()
            self._group = []
            try:
                yield
                sent = list(self._group)
            finally:
                self._group = None
            errors = self.read_errors()
            if errors:
                self._note("!", "; ".join(str(e) for e in errors))
                raise InstrumentError.from_queue(self.label, sent, errors)

    # -- IEEE 488.2 common commands -------------------------------------------

    def reset(self) -> None:
        """``*RST``: the instrument's default state."""
        with self.commands():
            self.write("*RST")

    def clear(self) -> None:
        """``*CLS``: clear status and the error queue."""
        self.write("*CLS")

    def wait_complete(self) -> None:
        """``*OPC?``: block until pending operations are complete."""
        with self.commands():
            answer = self.query("*OPC?")
        if answer.lstrip("+") != "1":
            raise InstrumentError(
                self.label, f"*OPC? answered {answer!r}, expected '1'", commands=["*OPC?"]
            )


class ChannelInstrument(ScpiInstrument):
    """A SCPI instrument with numbered channels 1..``channels``."""

    def __init__(
        self,
        resource: str,
        *,
        channels: int = 1,
        name: str | None = None,
        expected_model: str | None = None,
        timeout_s: float = 5.0,
        log_path: Path | None = None,
        lock_dir: Path | None = None,
        lock_wait_s: float = 2.0,
    ) -> None:
        super().__init__(
            resource,
            name=name,
            expected_model=expected_model,
            timeout_s=timeout_s,
            log_path=log_path,
            lock_dir=lock_dir,
            lock_wait_s=lock_wait_s,
        )
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels

    def check_channel(self, channel: int) -> int:
        """Raise :class:`ChannelOutOfRange` unless ``1 <= channel <= channels``."""
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise ChannelOutOfRange(self.label, f"channel must be an integer, got {channel!r}")
        if not 1 <= channel <= self.channels:
            raise ChannelOutOfRange(
                self.label,
                f"channel {channel} out of range: this instrument has 1..{self.channels}",
            )
        return channel


def scpi_number(value: float) -> str:
    """Format a number for SCPI (plain decimal or exponent, no spurious digits)."""
    return f"{float(value):.9g}"
