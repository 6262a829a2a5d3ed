"""Fixtures: one real sshd per session, connected hosts per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.ssh import SshHost

from .sshd import Sshd, descendants, start_sshd, stop_sshd, wait_dead


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 that accepts ``client_key`` for root."""
    proc, server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stuck = stop_sshd(proc)
        assert stuck == [], f"processes of the test sshd would not die: {stuck}"


@pytest.fixture
def make_host(sshd: Sshd) -> Iterator[Callable[..., SshHost]]:
    """Factory for connected hosts on the test sshd; all are closed after the test."""
    hosts: list[SshHost] = []

    def make(name: str = "h0", log_path: Path | None = None, **changes: object) -> SshHost:
        host = SshHost(sshd.endpoint(name, **changes), log_path=log_path)
        hosts.append(host)
        host.connect()
        return host

    yield make
    for host in hosts:
        host.close()


@pytest.fixture
def host(make_host: Callable[..., SshHost]) -> SshHost:
    """One connected host."""
    return make_host()


@pytest.fixture(scope="module")
def shared_host(sshd: Sshd) -> Iterator[SshHost]:
    """One connected host for a whole module, for tests that leave it usable."""
    with SshHost(sshd.endpoint("shared")) as host:
        yield host


@pytest.fixture(scope="module", autouse=True)
def _no_leftover_sessions(sshd: Sshd) -> Iterator[None]:
    """Fail a module that leaves remote processes behind once its hosts are closed."""
    before = set(descendants(sshd.pid))
    yield
    left = wait_dead(sorted(set(descendants(sshd.pid)) - before), 5.0)
    assert left == [], f"remote processes left behind: {left}"
