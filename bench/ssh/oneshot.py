"""Running one short command on a fresh exec channel.

Costs a session set-up on the host (~100 ms with OpenSSH) and is therefore
not how commands normally run; it is the way out when the persistent shell
is busy or wedged, for instance to kill the command that wedges it.
"""

from __future__ import annotations

import time

import paramiko

from bench.ssh.channel_io import at_eof, pump
from bench.ssh.errors import CommandTimeout, ConnectionLost
from bench.ssh.result import CommandResult


def decode(data: bytes | bytearray) -> str:
    """Remote output as text: UTF-8, undecodable bytes shown as U+FFFD."""
    return bytes(data).decode("utf-8", errors="replace")


def run_oneshot(
    host: str, transport: paramiko.Transport, command: str, timeout: float
) -> CommandResult:
    """Run ``command`` on its own exec channel and wait for it.

    On timeout the channel is closed (the command is not killed: this is
    meant for short, self-limiting commands) and :class:`CommandTimeout` is
    raised.
    """
    started = time.monotonic()
    deadline = started + timeout
    try:
        channel = transport.open_session(timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ConnectionLost(host, f"cannot open an SSH session: {exc}") from exc
    out = bytearray()
    err = bytearray()
    try:
        channel.exec_command(command)
        while not (at_eof(channel) and channel.exit_status_ready()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(host, command, timeout, decode(out), decode(err))
            if at_eof(channel):
                channel.status_event.wait(remaining)
            else:
                pump(channel, out, err, min(remaining, 0.5))
            if not transport.is_active():
                raise ConnectionLost(host, f"connection lost while running `{command}`")
        pump(channel, out, err, 0)
        status = channel.recv_exit_status()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ConnectionLost(host, f"connection lost while running `{command}`: {exc}") from exc
    finally:
        channel.close()
    return CommandResult(
        host=host,
        command=command,
        exit_status=status,
        stdout=decode(out),
        stderr=decode(err),
        duration=time.monotonic() - started,
    )
