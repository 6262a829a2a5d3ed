"""One lab host reached over SSH: commands, spawned processes, the command log."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import paramiko

from bench.errors import HostError
from bench.ssh.channel_io import at_eof, pump
from bench.ssh.cmdlog import CommandLog
from bench.ssh.connection import open_transport
from bench.ssh.endpoint import SshEndpoint
from bench.ssh.errors import CommandFailed, CommandTimeout, ConnectionLost, OutputTimeout
from bench.ssh.oneshot import decode, run_oneshot
from bench.ssh.process import RemoteProcess
from bench.ssh.result import CommandResult
from bench.ssh.shell import PendingCommand, PersistentShell, new_token, quote_for_eval

#: Seconds allowed for the short ``kill`` commands the bench sends itself.
SIGNAL_TIMEOUT = 5.0


class SshHost:
    """A connection to one lab host, driven by the bench.

    Commands (:meth:`run`) go through a persistent shell, one at a time per
    host (a lock serialises threads), at well under a millisecond each.
    Long-running processes (:meth:`spawn`) get their own channel each. Every
    command and process is recorded in the host's command log, if one is
    configured. Use as a context manager, or call :meth:`connect` and
    :meth:`close`.
    """

    def __init__(
        self,
        endpoint: SshEndpoint,
        log_path: Path | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._endpoint = endpoint
        self._connect_timeout = connect_timeout
        self._log = CommandLog(endpoint.host, log_path)
        #: Held from :meth:`send` to :meth:`collect`: one command at a time.
        self._lock = threading.Lock()
        #: Guards the connection state and the set of spawned processes.
        self._state_lock = threading.Lock()
        self._transport: paramiko.Transport | None = None
        self._shell: PersistentShell | None = None
        self._pending: PendingCommand | None = None
        self._processes: set[RemoteProcess] = set()

    @property
    def endpoint(self) -> SshEndpoint:
        """Where this host is reached."""
        return self._endpoint

    @property
    def name(self) -> str:
        """Lab name of the host."""
        return self._endpoint.host

    @property
    def connected(self) -> bool:
        """Whether the SSH connection is up (as far as the bench knows)."""
        transport = self._transport
        return transport is not None and transport.is_active()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<SshHost {self.name} {self._endpoint.display_address} {state}>"

    # -- connection -----------------------------------------------------------

    def connect(self) -> None:
        """Connect, verify the host key, log in and start the persistent shell.

        Does nothing if already connected; reconnects after a lost connection.
        """
        with self._lock, self._state_lock:
            if self.connected:
                return
            self._drop_connection()
            transport = open_transport(self._endpoint, self._connect_timeout)
            shell = PersistentShell(self.name, transport, open_timeout=self._connect_timeout)
            try:
                shell.open()
            except BaseException:
                transport.close()
                raise
            self._transport, self._shell = transport, shell
            self._log.note(
                f"connected to {self._endpoint.display_address} as {self._endpoint.user} "
                f"(shell pid {shell.shell_pid})"
            )

    def _drop_connection(self) -> None:
        if self._shell is not None:
            self._shell.close()
        if self._transport is not None:
            self._transport.close()
        self._shell = self._transport = None

    def close(self) -> None:
        """Stop every process this host spawned that still runs, then disconnect."""
        with self._state_lock:
            processes = list(self._processes)
        for process in processes:
            try:
                process.stop()
            except HostError as exc:
                self._log.note(f"could not stop spawned pid={process.pid}: {exc}")
        # A command sent but never collected (a test that failed in between,
        # Ctrl-C inside a fan-out) holds the lock: close anyway, without it; the
        # pending collect, if it ever comes, then fails with ConnectionLost.
        locked = self._lock.acquire(blocking=False)
        try:
            with self._state_lock:
                was_connected = self._transport is not None
                self._drop_connection()
                self._processes.clear()
        finally:
            if locked:
                self._lock.release()
        if was_connected:
            self._log.note("closed")
        self._log.close()

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _require_transport(self) -> paramiko.Transport:
        transport = self._transport
        if transport is None:
            raise ConnectionLost(self.name, "not connected (call connect() first)")
        if not transport.is_active():
            raise ConnectionLost(
                self.name, f"the connection to {self._endpoint.display_address} was lost"
            )
        return transport

    # -- commands on the persistent shell -------------------------------------

    def send(self, command: str, timeout: float = 30.0) -> PendingCommand:
        """Start ``command`` on the persistent shell without waiting for it.

        The host stays busy (other threads' commands wait) until the command
        is passed to :meth:`collect`, which must follow. The ``timeout`` is
        counted from now. Used by fan-out to overlap the round trips of
        many hosts; a single command is simpler with :meth:`run`.
        """
        self._lock.acquire()
        try:
            self._require_transport()
            assert self._shell is not None
            pending = self._shell.send(command, timeout)
        except BaseException as exc:
            self._lock.release()
            if isinstance(exc, HostError):
                self._log.failure("run", command, exc, 0.0)
            raise
        self._pending = pending
        return pending

    def collect(self, pending: PendingCommand, check: bool = False) -> CommandResult:
        """Wait for a command started by :meth:`send` and return its result.

        Raises :class:`CommandTimeout` if it missed its deadline (it has then
        been killed, with its children), :class:`CommandFailed` if ``check``
        and it exited non-zero, :class:`ConnectionLost` if the connection
        went away.
        """
        if pending is not self._pending:
            raise RuntimeError(f"{pending!r} is not the command pending on {self.name}")
        shell = self._shell
        if shell is None:  # closed while the command was pending
            self._pending = None
            self._lock.release()
            raise ConnectionLost(self.name, f"closed while running `{pending.command}`")
        try:
            result = shell.collect(pending)
        except CommandTimeout as exc:
            elapsed = time.monotonic() - pending.started
            self._log.failure(
                "run", pending.command, exc, elapsed, stdout=exc.stdout, stderr=exc.stderr
            )
            raise
        except HostError as exc:
            self._log.failure("run", pending.command, exc, time.monotonic() - pending.started)
            raise
        finally:
            self._pending = None
            self._lock.release()
        self._log.command(result)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def run(self, command: str, timeout: float = 30.0, check: bool = False) -> CommandResult:
        """Run ``command`` with bash on the host and return its result.

        Each command runs in a fresh subshell of the persistent shell: ``cd``,
        variables and ``exit`` do not carry over to the next command, and
        ``$$`` is the shell's PID (use ``$BASHPID``). Stdin is /dev/null. If
        the command is not done within ``timeout`` seconds, it is killed with
        everything it started and :class:`CommandTimeout` is raised.
        """
        return self.collect(self.send(command, timeout), check=check)

    def run_on_new_channel(self, command: str, timeout: float = 30.0) -> CommandResult:
        """Run ``command`` on a fresh exec channel, as ``ssh host cmd`` would.

        About 100 ms per call over OpenSSH (a new session each time): not for
        normal use; for a host whose persistent shell is busy, and as the
        reference the persistent shell is benchmarked against. The command is
        not killed on timeout.
        """
        result = run_oneshot(self.name, self._require_transport(), command, timeout)
        self._log.command(result)
        return result

    def fetch(self, remote: str, local: Path) -> None:
        """Copy file ``remote`` of the host to ``local`` here (SFTP on this connection)."""
        transport = self._require_transport()
        try:
            with paramiko.SFTPClient.from_transport(transport) as sftp:  # type: ignore[union-attr]
                sftp.get(remote, str(local))
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"cannot fetch {remote}: {exc}") from exc
        self._log.note(f"fetched {remote} -> {local}")

    def put(self, local: Path, remote: str) -> None:
        """Copy file ``local`` here to ``remote`` on the host (SFTP on this connection)."""
        transport = self._require_transport()
        try:
            with paramiko.SFTPClient.from_transport(transport) as sftp:  # type: ignore[union-attr]
                sftp.put(str(local), remote)
        except (OSError, paramiko.SSHException) as exc:
            raise HostError(self.name, f"cannot copy {local} to {remote}: {exc}") from exc
        self._log.note(f"copied {local} -> {remote}")

    # -- spawned processes ----------------------------------------------------

    def spawn(self, command: str) -> RemoteProcess:
        """Start a long-running ``command`` on its own channel and return at once.

        The process keeps running until it ends, is stopped, or the host is
        closed. Raises :class:`CommandFailed` if it ends before it could even
        report its PID (e.g. the login shell refused to run it).
        """
        transport = self._require_transport()
        token = new_token()
        wrapped = f"echo {token} $$; exec bash -c {quote_for_eval(command)} </dev/null"
        started = time.monotonic()
        try:
            channel = transport.open_session(timeout=self._connect_timeout)
            channel.exec_command(wrapped)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(
                self.name, f"cannot open a session to spawn a process: {exc}"
            ) from exc
        pid, out, err = self._read_pid(channel, token, command, started)
        process = RemoteProcess(
            host=self.name,
            command=command,
            pid=pid,
            channel=channel,
            started=started,
            stdout=out,
            stderr=err,
            signal_group=self._signal_group,
            on_exit=self._process_ended,
        )
        with self._state_lock:
            self._processes.add(process)
        self._log.spawned(command, pid)
        return process

    def open_stream(self, command: str) -> paramiko.Channel:
        """Run ``command`` on a channel of its own and hand over the raw channel: a byte
        stream to the command's stdin and from its stdout (``sendall``, ``recv``,
        ``settimeout``, ``close``), for protocols relayed through the host (QMP, a serial
        console). Closing the channel ends the command's stdin; the caller closes it."""
        transport = self._require_transport()
        try:
            channel = transport.open_session(timeout=self._connect_timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(self.name, f"cannot open a stream for `{command}`: {exc}") from exc
        self._log.note(f"stream opened: {command}")
        return channel

    def _read_pid(
        self, channel: paramiko.Channel, token: str, command: str, started: float
    ) -> tuple[int, bytearray, bytearray]:
        """Wait for the PID line; return the PID and the output after it."""
        pid_line = re.compile(rb"(?:^|\n)" + token.encode() + rb" (\d+)\n")
        out = bytearray()
        err = bytearray()
        deadline = started + self._connect_timeout
        while (match := pid_line.search(out)) is None:
            if at_eof(channel) and not channel.recv_ready():
                channel.status_event.wait(max(0.0, deadline - time.monotonic()))
                status = channel.recv_exit_status() if channel.exit_status_ready() else -1
                channel.close()
                result = CommandResult(
                    host=self.name,
                    command=command,
                    exit_status=status,
                    stdout=decode(out),
                    stderr=decode(err),
                    duration=time.monotonic() - started,
                )
                self._log.command(result, kind="spawn")
                raise CommandFailed(result)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                channel.close()
                raise OutputTimeout(
                    self.name,
                    f"spawned `{command}` did not report its PID within "
                    f"{self._connect_timeout:g} s; its session was closed",
                )
            pump(channel, out, err, min(remaining, 0.5))
        return int(match.group(1)), bytearray(out[match.end() :]), err

    def _process_ended(self, process: RemoteProcess, result: CommandResult, how: str) -> None:
        with self._state_lock:
            self._processes.discard(process)
        self._log.stopped(result, process.pid, how)

    def _signal_group(self, pid: int, signal: str) -> None:
        """Send ``signal`` to remote process group ``pid``.

        Through the persistent shell if it is free (sub-millisecond), else on
        a fresh exec channel, so stopping a process never waits for a long
        command another thread runs.
        """
        command = f"kill -{signal} -- -{pid} 2>/dev/null; true"
        if self._lock.acquire(blocking=False):
            try:
                self._require_transport()
                assert self._shell is not None
                try:
                    self._shell.collect(self._shell.send(command, SIGNAL_TIMEOUT))
                    return
                except HostError:
                    pass  # Trouble with the shell: fall back to an exec channel.
            finally:
                self._lock.release()
        run_oneshot(self.name, self._require_transport(), command, SIGNAL_TIMEOUT)
