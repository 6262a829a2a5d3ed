"""The SSH host driver: how the bench runs commands and processes on lab hosts.

Connections are verified against the lab's own known_hosts only and
authenticated by key. Commands run on a persistent shell per host
(sub-millisecond round trips, enforced deadlines that kill the whole
command tree), long-running processes on their own channels, and every
action is recorded in a per-host command log.
"""

from bench.ssh.client_config import render_ssh_config
from bench.ssh.endpoint import SshEndpoint
from bench.ssh.errors import (
    AuthenticationFailed,
    CommandFailed,
    CommandTimeout,
    ConnectionLost,
    HostKeyMismatch,
    HostsFailed,
    HostUnreachable,
    OutputTimeout,
    UnknownHostKey,
)
from bench.ssh.fanout import connect_all, run_on_all
from bench.ssh.host import SshHost
from bench.ssh.process import RemoteProcess
from bench.ssh.result import CommandResult
from bench.ssh.shell import PendingCommand

__all__ = [
    "AuthenticationFailed",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectionLost",
    "HostKeyMismatch",
    "HostUnreachable",
    "HostsFailed",
    "OutputTimeout",
    "PendingCommand",
    "RemoteProcess",
    "SshEndpoint",
    "SshHost",
    "UnknownHostKey",
    "connect_all",
    "render_ssh_config",
    "run_on_all",
]
