"""Waiting for and draining output of a paramiko channel without busy-polling.

``Channel.fileno()`` is a pipe paramiko signals whenever stdout *or* stderr
data arrives (or the channel closes), so one ``select`` wakes the reader as
soon as there is anything to read, with no fixed polling delay in the way of
sub-millisecond round trips.
"""

from __future__ import annotations

import select

import paramiko

#: Bytes asked for per recv call; large enough that a megabyte of output takes
#: a few dozen calls.
CHUNK = 1 << 16


def at_eof(channel: paramiko.Channel) -> bool:
    """Whether the remote side will send no more output on ``channel``."""
    return bool(channel.eof_received or channel.closed)


def drain(channel: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
    """Append whatever output is buffered now; return whether there was any."""
    got = False
    while channel.recv_ready():
        out += channel.recv(CHUNK)
        got = True
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(CHUNK)
        got = True
    return got


def pump(channel: paramiko.Channel, out: bytearray, err: bytearray, wait: float) -> bool:
    """Wait up to ``wait`` seconds for output, then drain it.

    Returns whether any output was read. Returns at once if output is already
    buffered or the channel is at EOF (so callers must check :func:`at_eof`
    rather than loop on this alone).
    """
    if drain(channel, out, err):
        return True
    if at_eof(channel) or wait <= 0:
        return False
    select.select([channel.fileno()], [], [], wait)
    return drain(channel, out, err)
