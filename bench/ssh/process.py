"""Long-running and streaming processes, each on its own exec channel.

Traffic generators, packet captures and log followers run for minutes and
stream output; they cannot block the host's persistent shell, so each gets
its own SSH session (the ~100 ms set-up is irrelevant for them). The command
runs as ``echo TOK $$; exec bash -c '<command>' </dev/null``: the first line
gives the PID, and because sshd makes every session a process-group leader,
signalling the group ``-PID`` stops the command together with its children.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import paramiko

from bench.ssh.channel_io import at_eof, drain
from bench.ssh.errors import CommandTimeout, ConnectionLost, OutputTimeout, describe_command
from bench.ssh.oneshot import decode
from bench.ssh.result import CommandResult

#: Stderr kept per process (the end of it): enough to explain a failure,
#: bounded for processes that complain for hours.
STDERR_KEEP = 1 << 20

#: Seconds a process gets to exit after SIGKILL before the bench gives up on it.
KILL_WAIT = 5.0

_POLL = 0.5

#: Sends a signal ("TERM", "KILL") to a remote process group.
SignalGroup = Callable[[int, str], None]
#: Told when a process has ended: the process, its result, and how it ended.
OnExit = Callable[["RemoteProcess", CommandResult, str], None]


class RemoteProcess:
    """A command running on a host, with its output streamed back.

    Read stdout line by line with :meth:`read_stdout_line` or by iterating;
    stderr is collected in the background of every read. End it with
    :meth:`wait` (it ends by itself) or :meth:`stop` (the bench ends it).
    Used as a context manager it is always stopped on exit. Thread-safe: one
    thread may read lines while another stops the process.

    Output is buffered by SSH until read: a process whose stdout is never
    read stalls once about 2 MB are pending (flow control), rather than
    filling the bench's memory.

    A process killed by a signal has ``exit_status`` -1 in its result: SSH
    reports a signal instead of a status, and paramiko does not expose it.
    """

    def __init__(
        self,
        *,
        host: str,
        command: str,
        pid: int,
        channel: paramiko.Channel,
        started: float,
        stdout: bytearray,
        stderr: bytearray,
        signal_group: SignalGroup,
        on_exit: OnExit,
    ) -> None:
        self._host = host
        self._command = command
        self._pid = pid
        self._channel = channel
        self._started = started
        self._out = stdout
        self._err = stderr
        self._signal_group = signal_group
        self._on_exit = on_exit
        self._lock = threading.RLock()
        self._result: CommandResult | None = None

    @property
    def host(self) -> str:
        """Lab name of the host the process runs on."""
        return self._host

    @property
    def command(self) -> str:
        """The command as given to :meth:`~bench.ssh.host.SshHost.spawn`."""
        return self._command

    @property
    def pid(self) -> int:
        """Remote PID, which is also the process-group id of the command."""
        return self._pid

    @property
    def running(self) -> bool:
        """Whether the process has not yet been seen to end."""
        return self._result is None

    def __repr__(self) -> str:
        state = "running" if self.running else "ended"
        return f"<RemoteProcess {self._host} pid={self._pid} {state} {self._command!r}>"

    def _pump(self, wait: float) -> None:
        """Wait up to ``wait`` seconds for output, then take what has arrived.

        The wait happens without the lock, so a thread blocked reading lines
        never keeps another from stopping the process; the buffers are only
        touched under it, so concurrent readers cannot reorder output.
        """
        channel = self._channel
        if wait > 0 and not (
            channel.recv_ready() or channel.recv_stderr_ready() or at_eof(channel)
        ):
            select.select([channel.fileno()], [], [], wait)
        with self._lock:
            try:
                drain(channel, self._out, self._err)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self._lost(exc) from exc
            if len(self._err) > STDERR_KEEP:
                del self._err[: len(self._err) - STDERR_KEEP]

    def _lost(self, cause: BaseException | None = None) -> ConnectionLost:
        detail = f": {cause}" if cause else ""
        return ConnectionLost(
            self._host,
            f"the connection was lost while {describe_command(self._command)} "
            f"(pid {self._pid}) was running{detail}",
        )

    def _check_transport(self) -> None:
        transport = self._channel.get_transport()
        if not transport.is_active() and not self._channel.exit_status_ready():
            raise self._lost()

    def _take_line(self) -> tuple[bool, str | None]:
        """(True, line) if a line (or the last, unterminated one) is there,
        (True, None) at the end of stdout, (False, None) if more must be read."""
        with self._lock:
            newline = self._out.find(b"\n")
            if newline >= 0:
                line = bytes(self._out[:newline])
                del self._out[: newline + 1]
                return True, decode(line)
            if self._result is not None or (
                at_eof(self._channel) and not self._channel.recv_ready()
            ):
                rest = bytes(self._out)
                self._out.clear()
                return True, decode(rest) if rest else None
            return False, None

    def read_stdout_line(self, timeout: float | None = None) -> str | None:
        """The next line of stdout without its newline; None once stdout has ended.

        Raises :class:`OutputTimeout` if no complete line arrives within
        ``timeout`` seconds (None: wait as long as it takes). The process is
        left running either way.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done, line = self._take_line()
            if done:
                return line
            remaining = _POLL if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise OutputTimeout(
                    self._host,
                    f"{describe_command(self._command)} (pid {self._pid}) printed no "
                    f"complete line within {timeout:g} s; it is still running",
                )
            self._pump(min(remaining, _POLL))
            self._check_transport()

    def __iter__(self) -> Iterator[str]:
        """Lines of stdout until it ends."""
        while (line := self.read_stdout_line()) is not None:
            yield line

    def _wait_exit(self, timeout: float) -> bool:
        """Read output until the process has ended; False if ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        channel = self._channel
        while not (at_eof(channel) and channel.exit_status_ready()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if at_eof(channel):
                # Output is complete; the exit status is on its way.
                channel.status_event.wait(min(remaining, _POLL))
            else:
                self._pump(min(remaining, _POLL))
            self._check_transport()
        self._pump(0)
        return True

    def _finish(self, how: str) -> CommandResult:
        """Record the end of the process (once, whichever thread sees it first)."""
        with self._lock:
            if self._result is not None:
                return self._result
            channel = self._channel
            status = channel.recv_exit_status() if channel.exit_status_ready() else -1
            if status == -1 and not channel.get_transport().is_active():
                # The channel ended because the connection did, not the process.
                channel.close()
                raise self._lost()
            result = CommandResult(
                host=self._host,
                command=self._command,
                exit_status=status,
                stdout=decode(self._out),
                stderr=decode(self._err),
                duration=time.monotonic() - self._started,
            )
            self._out.clear()
            channel.close()
            self._result = result
        self._on_exit(self, result, how)
        return result

    def wait(self, timeout: float | None = None) -> CommandResult:
        """Wait for the process to end by itself and return its result.

        ``stdout`` in the result is the output not already returned by
        :meth:`read_stdout_line`. If ``timeout`` seconds pass first, the
        process is stopped and :class:`CommandTimeout` raised.
        """
        if self._result is not None:
            return self._result
        if self._wait_exit(float("inf") if timeout is None else timeout):
            return self._finish("exited")
        # Stop first: what the process prints on its way out (a report on SIGTERM)
        # belongs to the output the caller gets with the timeout.
        result = self.stop()
        assert timeout is not None
        raise CommandTimeout(self._host, self._command, timeout, result.stdout, result.stderr)

    def stop(self, timeout: float = 5.0) -> CommandResult:
        """Stop the process and its children; return its result.

        Sends SIGTERM to the process group, and SIGKILL if it has not ended
        ``timeout`` seconds later. Returns at once if it has already ended.
        Safe to call from another thread while one is reading output.
        """
        if self._result is not None:
            return self._result
        if self._wait_exit(0):
            return self._finish("exited")
        self._signal_group(self._pid, "TERM")
        if self._wait_exit(timeout):
            return self._finish("stopped (SIGTERM)")
        self._signal_group(self._pid, "KILL")
        if self._wait_exit(KILL_WAIT):
            return self._finish("stopped (SIGKILL)")
        return self._finish("abandoned (did not end after SIGKILL)")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
