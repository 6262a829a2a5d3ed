"""Fan-out: one command on many hosts, pipelined; parallel connect."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.ssh import (
    CommandFailed,
    CommandTimeout,
    ConnectionLost,
    HostKeyMismatch,
    HostsFailed,
    SshHost,
    connect_all,
    run_on_all,
)

from .sshd import Sshd, keygen

NAMES = ["h0", "h1", "h2", "h3"]


@pytest.fixture(scope="module")
def hosts(sshd: Sshd) -> Iterator[list[SshHost]]:
    """Four connections to the same sshd, standing in for four lab hosts."""
    group = [SshHost(sshd.endpoint(name)) for name in NAMES]
    try:
        connect_all(group)
        yield group
    finally:
        for host in group:
            host.close()


def _mark_failing(host: SshHost, tmp_path: Path) -> None:
    # $$ is the host's persistent shell, different for each connection.
    host.run(f"touch {tmp_path}/fail.$$", check=True)


def test_results_by_host_in_input_order(hosts: list[SshHost]) -> None:
    results = run_on_all(hosts, "echo $$; echo to-stderr >&2")
    assert list(results) == NAMES
    shell_pids = {results[name].stdout for name in NAMES}
    assert len(shell_pids) == 4  # Each result came from its own host.
    assert all(result.stderr == "to-stderr\n" for result in results.values())
    assert [result.host for result in results.values()] == NAMES

    reversed_results = run_on_all(list(reversed(hosts)), "true")
    assert list(reversed_results) == list(reversed(NAMES))


def test_hosts_work_in_parallel(hosts: list[SshHost]) -> None:
    started = time.monotonic()
    results = run_on_all(hosts, "sleep 0.5; echo done")
    elapsed = time.monotonic() - started
    assert all(result.stdout == "done\n" for result in results.values())
    assert elapsed < 1.0  # One after the other would take 2 s.


def test_one_failing_host_is_reported_as_its_result(hosts: list[SshHost], tmp_path: Path) -> None:
    _mark_failing(hosts[2], tmp_path)
    results = run_on_all(hosts, f"! test -e {tmp_path}/fail.$$")
    assert {name: result.exit_status for name, result in results.items()} == {
        "h0": 0,
        "h1": 0,
        "h2": 1,
        "h3": 0,
    }


def test_check_raises_one_error_naming_the_failing_host(
    hosts: list[SshHost], tmp_path: Path
) -> None:
    _mark_failing(hosts[1], tmp_path)
    command = f"if test -e {tmp_path}/fail.$$; then echo broken >&2; exit 9; fi"
    with pytest.raises(HostsFailed) as caught:
        run_on_all(hosts, command, check=True)
    error = caught.value
    assert list(error.errors) == ["h1"]
    assert isinstance(error.errors["h1"], CommandFailed)
    assert list(error.results) == ["h0", "h1", "h2", "h3"]
    message = str(error)
    assert "failed on 1 host(s)" in message
    assert "h1: " in message
    assert "exit status 9" in message
    assert "broken" in message


@pytest.mark.parametrize("slow", [0, 3], ids=["slow-host-first", "slow-host-last"])
def test_timeout_on_one_host_spares_the_others(
    hosts: list[SshHost], tmp_path: Path, slow: int
) -> None:
    """Hosts collected after a slow one are past their deadline by then, yet finished in time."""
    _mark_failing(hosts[slow], tmp_path)
    started = time.monotonic()
    with pytest.raises(HostsFailed) as caught:
        run_on_all(hosts, f"test -e {tmp_path}/fail.$$ && sleep 30; echo ok", timeout=1)
    assert time.monotonic() - started < 2.5
    assert list(caught.value.errors) == [f"h{slow}"]
    assert isinstance(caught.value.errors[f"h{slow}"], CommandTimeout)
    assert [result.stdout for result in caught.value.results.values()] == ["ok\n"] * 3
    # Every host, including the one that timed out, is usable afterwards.
    assert all(result.ok for result in run_on_all(hosts, "true").values())


def test_close_with_a_command_never_collected_does_not_hang(sshd: Sshd) -> None:
    host = SshHost(sshd.endpoint("pending"))
    host.connect()
    pending = host.send("sleep 30", timeout=60)
    started = time.monotonic()
    host.close()
    assert time.monotonic() - started < 5
    assert not host.connected
    with pytest.raises(ConnectionLost):
        host.collect(pending)


def test_duplicate_hosts_are_rejected(hosts: list[SshHost]) -> None:
    with pytest.raises(ValueError, match="h0"):
        run_on_all([hosts[0], hosts[1], hosts[0]], "true")


def test_connect_all_connects_every_host(sshd: Sshd) -> None:
    group = [SshHost(sshd.endpoint(f"c{i}")) for i in range(6)]
    try:
        connect_all(group)
        assert all(host.connected for host in group)
    finally:
        for host in group:
            host.close()


def test_connect_all_lists_every_failed_host(sshd: Sshd, tmp_path: Path) -> None:
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {keygen(tmp_path / 'other')}\n")
    group = [
        SshHost(sshd.endpoint("good")),
        SshHost(sshd.endpoint("bad1", known_hosts=wrong)),
        SshHost(sshd.endpoint("bad2", known_hosts=wrong)),
    ]
    try:
        with pytest.raises(HostsFailed) as caught:
            connect_all(group)
        assert list(caught.value.errors) == ["bad1", "bad2"]
        assert all(isinstance(e, HostKeyMismatch) for e in caught.value.errors.values())
        message = str(caught.value)
        assert message.startswith("connecting failed on 2 host(s):")
        assert "bad1: the host key of bad1" in message
        assert "bad2: the host key of bad2" in message
        assert group[0].connected
    finally:
        for host in group:
            host.close()


def test_single_host_fan_out(make_host: Callable[..., SshHost]) -> None:
    # A single host is a valid (degenerate) fan-out.
    host = make_host("solo")
    assert run_on_all([host], "echo hi")["solo"].stdout == "hi\n"
