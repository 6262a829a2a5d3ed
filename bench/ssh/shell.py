"""The persistent shell: remote commands in about a millisecond over one channel.

A fresh exec channel per command costs ~100 ms with OpenSSH (the server sets
up a session and starts the login shell, which sources ``~/.bashrc``, each
time); writing the command to a long-lived ``bash`` costs about a millisecond
or less, most of it the fork of the command's subshell. This module owns
that shell and its protocol.

Protocol. The channel runs ``exec bash --noprofile --norc`` with ``set -m``
(job control, which works without a tty in bash; dash cannot do it), so every
background job is the leader of its own process group. Each command is one
line::

    ( eval '<cmd>' ) </dev/null & wait $! 2>/dev/null;
    printf '%s R %d\\n' TOK $?; printf '%s E\\n' TOK >&2

with a fresh random ``TOK`` per command, so command output cannot forge a
frame. The subshell and ``eval`` contain ``exit``, ``cd``, variable changes and
syntax errors: every command starts from the same state and none can end the
shell. (Consequently ``$$`` is the shell's PID, not the command's: use
``$BASHPID``.) ``</dev/null`` keeps the command from eating the next ones.
``wait``'s stderr goes to /dev/null because with job control bash reports a
job killed by a signal there ("[1]+ Terminated ( eval ... )"), which is
noise about the wrapper, not output of the command; the status says it.

Framing. Output before the ``R`` (stdout) and ``E`` (stderr) frames is the
command's; exactly the injected frame bytes are cut out, so output without a
trailing newline stays as it is. A frame is found by its token wherever it
is, not only at the start of a line, and deliberately does not begin with a
newline: bash's stdout is line-buffered, so ``printf '\\nTOK R 1\\n'`` is two
writes, output of a background process can land between them, and the
frame's first byte becomes indistinguishable from the command's. A frame with
a single, final newline is one atomic write.

Stopping. The job is the shell's only child (earlier jobs were waited for)
and, with job control, the leader of its own process group. On a missed
deadline the bench finds it from the shell's PID (learnt at start-up) and
kills its group through a separate exec channel, which stops the whole tree
the command started (except processes that left the group on purpose, with
``setsid`` or their own job control), and the shell survives. (An earlier
design printed the job's PID in a frame of its own; finding the job only on
a timeout saves a packet per command, a third of the controller's work.)

Late output of background processes left running by earlier commands is
discarded when the next command is sent, as far as it has arrived by then.
(Start frames would fence it exactly, but cost two more packets, ~15% of a
round trip, for output that is a bug of the command anyway: it should be
redirected, or the process spawned.)

Deadlines are the bench's: paramiko's timeouts do not cover a command that
never exits. A command is split into :meth:`PersistentShell.send` and
:meth:`PersistentShell.collect` so that fan-out can write to every host first
and only then wait, paying one round trip for all of them.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass

import paramiko

from bench.errors import HostError
from bench.ssh.channel_io import at_eof, drain, pump
from bench.ssh.errors import CommandTimeout, ConnectionLost, describe_command
from bench.ssh.oneshot import decode, run_oneshot
from bench.ssh.result import CommandResult

#: How long to wait for the framing of a command whose group was just killed,
#: before giving up on the shell and starting a new one.
KILL_GRACE = 3.0

#: Upper bound on one ``select`` wait, so a dead transport is noticed promptly.
_POLL = 0.5

_SHELL_COMMAND = "exec bash --noprofile --norc"


def new_token() -> str:
    # 64 random bits: output of a command cannot contain the token by chance.
    return "_npa" + secrets.token_hex(8)


def quote_for_eval(command: str) -> str:
    """``command`` as one single-quoted shell word."""
    return "'" + command.replace("'", "'\\''") + "'"


def kill_jobs_command(shell_pid: int, grace: float = 0.2) -> str:
    """Shell code that stops the running job of persistent shell ``shell_pid``.

    The job is the shell's only child (earlier jobs were waited for; what
    they left in the background was re-parented when they ended) and, with
    job control on, the leader of its own process group. The code TERMs each
    such group, KILLs whatever is left after ``grace`` s, and returns as soon
    as the groups are gone. Plain POSIX sh reading /proc, so it needs no
    procps on the host.
    """
    steps = max(1, round(grace / 0.02))
    return (
        "jobs=; for f in /proc/[0-9]*/stat; do read -r l 2>/dev/null < $f || continue; "
        "r=${l##*) }; set -- $r; d=${f%/stat}; "
        f'[ "$2" = {shell_pid} ] && jobs="$jobs ${{d#/proc/}}"; '
        'done; [ -n "$jobs" ] || exit 0; '
        "for p in $jobs; do kill -TERM -- -$p 2>/dev/null; done; "
        f"i=0; while [ $i -lt {steps} ]; do sleep 0.02; alive=; "
        "for p in $jobs; do kill -0 -- -$p 2>/dev/null && alive=1; done; "
        '[ -n "$alive" ] || exit 0; i=$((i+1)); done; '
        "for p in $jobs; do kill -KILL -- -$p 2>/dev/null; done; exit 0"
    )


@dataclass(frozen=True)
class PendingCommand:
    """A command written to a shell whose result has not been collected yet."""

    host: str
    command: str
    #: Seconds the command may run, counted from :attr:`started`.
    timeout: float
    #: ``time.monotonic()`` when the command was written to the shell.
    started: float
    token: str

    @property
    def deadline(self) -> float:
        """``time.monotonic()`` value after which the command is stopped."""
        return self.started + self.timeout


def _find_frame(data: bytearray, prefix: bytes, start: int = 0) -> tuple[int, int, int] | None:
    """Find ``prefix`` followed by a number and a newline.

    Returns (offset, length, number), or None if the frame is not (completely)
    there.
    """
    at = data.find(prefix, start)
    if at < 0:
        return None
    newline = data.find(b"\n", at + len(prefix))
    if newline < 0:
        return None
    return at, newline + 1 - at, int(data[at + len(prefix) : newline])


class _Frames:
    """One command's frames in the shell's buffers, found as output arrives."""

    def __init__(self, pending: PendingCommand) -> None:
        token = pending.token.encode()
        self.pending = pending
        self.end_prefix = token + b" R "
        self.err_end = token + b" E\n"
        self._out_scan = 0
        self._err_scan = 0
        #: Offset and length of the ``R`` frame in the stdout buffer, once seen.
        self.end_at = -1
        self.end_len = 0
        self.status = -1
        #: Offset of the ``E`` frame in the stderr buffer, once seen.
        self.err_end_at = -1

    def scan(self, out: bytearray, err: bytearray) -> bool:
        """Look for the end frames in newly arrived output; return whether both are in."""
        if self.end_at < 0:
            found = _find_frame(out, self.end_prefix, self._out_scan)
            if found is not None:
                self.end_at, self.end_len, self.status = found
            else:
                # A frame may straddle two reads: rescan the tail that could hold its start.
                self._out_scan = max(0, len(out) - len(self.end_prefix) - 12)
        if self.err_end_at < 0:
            self.err_end_at = err.find(self.err_end, self._err_scan)
            self._err_scan = max(0, len(err) - len(self.err_end))
        return self.end_at >= 0 and self.err_end_at >= 0

    def output(self, out: bytearray, err: bytearray) -> tuple[str, str]:
        """The command's stdout and stderr so far, with every frame cut out."""
        stdout = out[: self.end_at] if self.end_at >= 0 else bytearray(out)
        stderr = err[: self.err_end_at] if self.err_end_at >= 0 else err
        return decode(stdout), decode(stderr)


class PersistentShell:
    """One long-lived ``bash`` on one transport, running one command at a time.

    Not thread-safe: :class:`~bench.ssh.host.SshHost` serialises access. At
    most one command may be pending; :meth:`collect` must follow every
    :meth:`send`.
    """

    def __init__(
        self, host: str, transport: paramiko.Transport, open_timeout: float = 10.0
    ) -> None:
        self._host = host
        self._transport = transport
        self._open_timeout = open_timeout
        self._channel: paramiko.Channel | None = None
        self._shell_pid: int | None = None
        self._out = bytearray()
        self._err = bytearray()
        self._pending: PendingCommand | None = None

    @property
    def shell_pid(self) -> int | None:
        """PID of the remote bash, once started."""
        return self._shell_pid

    @property
    def is_open(self) -> bool:
        """Whether the shell is running and usable."""
        return self._channel is not None and not at_eof(self._channel)

    def open(self) -> None:
        """Start the remote bash, switch on job control and learn its PID.

        Output before the start-up frames (say, of a chatty ``.bashrc`` of the
        login shell sshd runs first) is discarded.
        """
        self.close()
        token = new_token()
        try:
            channel = self._transport.open_session(timeout=self._open_timeout)
            channel.exec_command(_SHELL_COMMAND)
            channel.sendall(
                f"set -m; printf '%s %d\\n' {token} $$; printf '%s\\n' {token} >&2\n".encode()
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(self._host, f"cannot start the persistent shell: {exc}") from exc
        out = bytearray()
        err = bytearray()
        ready_prefix = f"{token} ".encode()
        err_ready = f"{token}\n".encode()
        deadline = time.monotonic() + self._open_timeout
        while (found := _find_frame(out, ready_prefix)) is None or err_ready not in err:
            if at_eof(channel) and not drain(channel, out, err):
                channel.close()
                raise ConnectionLost(
                    self._host,
                    f"the persistent shell ({_SHELL_COMMAND}) exited at start-up: "
                    f"{decode(err).strip() or 'no message'}",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                channel.close()
                raise ConnectionLost(
                    self._host,
                    f"the persistent shell did not start within {self._open_timeout:g} s",
                )
            pump(channel, out, err, min(remaining, _POLL))
        at, length, pid = found
        self._channel = channel
        self._shell_pid = pid
        self._out = bytearray(out[at + length :])
        self._err = bytearray(err[err.find(err_ready) + len(err_ready) :])

    def close(self) -> None:
        """Close the channel; bash sees end of input and exits."""
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._pending = None
        self._out.clear()
        self._err.clear()

    def send(self, command: str, timeout: float) -> PendingCommand:
        """Write ``command`` to the shell; it then runs for at most ``timeout`` s."""
        if "\0" in command:
            raise ValueError("a shell command cannot contain a NUL character")
        if self._pending is not None:
            raise RuntimeError("the previous command on this shell was not collected")
        if not self.is_open:
            self.open()
        channel = self._channel
        assert channel is not None
        token = new_token()
        line = (
            f"( eval {quote_for_eval(command)} ) </dev/null & wait $! 2>/dev/null; "
            f"printf '%s R %d\\n' {token} $?; printf '%s E\\n' {token} >&2\n"
        )
        try:
            # Whatever arrived since the last command is late output of its
            # leftover background processes: not this command's.
            drain(channel, self._out, self._err)
            self._out.clear()
            self._err.clear()
            started = time.monotonic()
            channel.sendall(line.encode())
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise self._lost(command, exc) from exc
        self._pending = PendingCommand(
            host=self._host, command=command, timeout=timeout, started=started, token=token
        )
        return self._pending

    def collect(self, pending: PendingCommand) -> CommandResult:
        """Wait for ``pending`` to finish and return its result.

        Raises :class:`CommandTimeout` after killing the command's process
        group if it misses its deadline, :class:`ConnectionLost` if the
        connection or the shell goes away.
        """
        if pending is not self._pending:
            raise RuntimeError("this command is not the one pending on this shell")
        frames = _Frames(pending)
        try:
            if not self._wait_for(frames, pending.deadline):
                self._stop_overdue(frames)
        except ConnectionLost:
            self.close()
            raise
        finally:
            self._pending = None
        stdout, stderr = frames.output(self._out, self._err)
        self._consume(frames)
        return CommandResult(
            host=self._host,
            command=pending.command,
            exit_status=frames.status,
            stdout=stdout,
            stderr=stderr,
            duration=time.monotonic() - pending.started,
        )

    def _wait_for(self, frames: _Frames, deadline: float) -> bool:
        """Read output until both end frames are in; False if ``deadline`` passes first.

        Output already buffered always counts, even past the deadline, so a
        command that finished in time is not reported late because its
        result was collected late (as happens in fan-out). Raises
        :class:`ConnectionLost` if the shell or the connection ends.
        """
        channel = self._channel
        assert channel is not None
        command = frames.pending.command
        while not frames.scan(self._out, self._err):
            try:
                if at_eof(channel) or not self._transport.is_active():
                    if drain(channel, self._out, self._err):
                        continue
                    raise self._lost(command)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # What paramiko already holds counts: in fan-out a host is
                    # collected after others, possibly past its deadline.
                    drain(channel, self._out, self._err)
                    return frames.scan(self._out, self._err)
                pump(channel, self._out, self._err, min(remaining, _POLL))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise self._lost(command, exc) from exc
        return True

    def _lost(self, command: str, cause: BaseException | None = None) -> ConnectionLost:
        detail = f": {cause}" if cause else ""
        if not self._transport.is_active():
            return ConnectionLost(
                self._host,
                f"the connection was lost while running {describe_command(command)}{detail}",
            )
        return ConnectionLost(
            self._host,
            f"the persistent shell exited while running {describe_command(command)}{detail} "
            "(a command that kills $$ or its parent ends the shell)",
        )

    def _stop_overdue(self, frames: _Frames) -> None:
        """Kill an overdue command's process group, recover the shell, raise CommandTimeout."""
        pending = frames.pending
        shell_pid = self._shell_pid
        recovered = False
        if shell_pid is not None:
            try:
                run_oneshot(self._host, self._transport, kill_jobs_command(shell_pid), KILL_GRACE)
                recovered = self._wait_for(frames, time.monotonic() + KILL_GRACE)
            except HostError:
                recovered = False
        stdout, stderr = frames.output(self._out, self._err)
        if recovered:
            self._consume(frames)
        else:
            self._abandon()
        raise CommandTimeout(self._host, pending.command, pending.timeout, stdout, stderr)

    def _abandon(self) -> None:
        """Give up on a wedged shell: kill it remotely if possible, then forget it.

        The next command starts a new shell.
        """
        pid = self._shell_pid
        self.close()
        if pid is not None and self._transport.is_active():
            # The job first (in case the earlier kill did not get through), then the shell.
            command = f"( {kill_jobs_command(pid, grace=0.0)} ); kill -KILL {pid}"
            with contextlib.suppress(HostError):
                run_oneshot(self._host, self._transport, command, KILL_GRACE)

    def _consume(self, frames: _Frames) -> None:
        """Drop this command's output from the buffers, keeping anything after it."""
        del self._out[: frames.end_at + frames.end_len]
        del self._err[: frames.err_end_at + len(frames.err_end)]
