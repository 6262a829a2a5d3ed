"""The same operation on many hosts at once.

A lab has up to a few dozen hosts and the bench often needs the same answer
from all of them (interface state, counters, a configuration step). Commands
are pipelined rather than threaded: the command is written to every host's
shell first and the results are collected afterwards, so the hosts work in
parallel and sixteen hosts cost about one round trip plus the slowest
command. Connecting (key exchange, authentication) is CPU- and latency-bound
per host and uses a thread pool instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from bench.errors import BenchError
from bench.ssh.errors import CommandFailed, HostsFailed
from bench.ssh.host import SshHost
from bench.ssh.result import CommandResult
from bench.ssh.shell import PendingCommand

#: Most connections opened at once; sshd's default MaxStartups (10:30:100)
#: starts refusing unauthenticated connections beyond 10 per server.
MAX_PARALLEL_CONNECTS = 8


def _check_unique(hosts: Sequence[SshHost]) -> None:
    names = [host.name for host in hosts]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"hosts listed more than once: {', '.join(duplicates)}")


def connect_all(hosts: Sequence[SshHost], max_parallel: int = MAX_PARALLEL_CONNECTS) -> None:
    """Connect every host, in parallel.

    Raises one :class:`HostsFailed` naming every host that could not be
    connected; the others stay connected (closing them is the caller's job,
    as for any host it created).
    """
    _check_unique(hosts)
    if not hosts:
        return
    errors: dict[str, BenchError] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(hosts)))) as pool:
        futures = [(host, pool.submit(host.connect)) for host in hosts]
        for host, future in futures:
            error = future.exception()
            if isinstance(error, BenchError):
                errors[host.name] = error
            elif error is not None:
                raise error
    if errors:
        raise HostsFailed("connecting", errors)


def run_on_all(
    hosts: Sequence[SshHost], command: str, timeout: float = 30.0, check: bool = False
) -> dict[str, CommandResult]:
    """Run ``command`` on every host; return results by host name, in input order.

    A non-zero exit status is a result like any other unless ``check`` is
    set. Any host that fails (timeout, lost connection, or with ``check`` a
    non-zero status) makes the whole call raise :class:`HostsFailed`, after
    every host has been collected; its ``results`` still holds every result
    that came back.
    """
    _check_unique(hosts)
    errors: dict[str, BenchError] = {}
    pending: list[tuple[SshHost, PendingCommand]] = []
    try:
        for host in hosts:
            try:
                pending.append((host, host.send(command, timeout)))
            except BenchError as exc:
                errors[host.name] = exc
    finally:
        # Every send must be collected, even if a later send raised something
        # unexpected: a host stays locked until its command is collected.
        results: dict[str, CommandResult] = {}
        for host, sent in pending:
            try:
                result = host.collect(sent)
            except BenchError as exc:
                errors[host.name] = exc
                continue
            results[host.name] = result
            if check and not result.ok:
                errors[host.name] = CommandFailed(result)
    ordered = {host.name: results[host.name] for host in hosts if host.name in results}
    if errors:
        errors = {host.name: errors[host.name] for host in hosts if host.name in errors}
        raise HostsFailed(f"`{command}`", errors, ordered)
    return ordered
