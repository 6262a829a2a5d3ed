"""The per-host command log."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.ssh import CommandTimeout, SshHost

HEADER = re.compile(
    r"^== (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) logged (.*)$", flags=re.MULTILINE
)


def test_log_records_commands_processes_and_failures(
    make_host: Callable[..., SshHost], tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "logged.log"
    host = make_host("logged", log_path=log)
    host.run("echo hello; echo oops >&2; exit 2")
    host.run("printf 'two\\nlines'")
    host.run("head -c 20000 /dev/zero | tr '\\0' a")
    with pytest.raises(CommandTimeout):
        host.run("echo slow-start; sleep 30", timeout=0.3)
    with host.spawn("echo streaming; sleep 300") as process:
        assert process.read_stdout_line(timeout=5) == "streaming"
    host.close()

    text = log.read_text()
    headers = HEADER.findall(text)
    kinds = [rest.split()[0] for _, rest in headers]
    assert kinds == ["connected", "run", "run", "run", "run", "spawn", "spawned", "closed"]

    record = text.split("\n\n")[1]
    assert re.match(r"== \S+ logged run exit=2 duration=\d+\.\d{3} ms\n", record)
    assert "$ echo hello; echo oops >&2; exit 2" in record
    assert "-- stdout (6 chars):\nhello" in record
    assert "-- stderr (5 chars):\noops" in record

    assert "-- stdout (9 chars):\ntwo\nlines\n(no newline at end)" in text
    assert "-- stderr: (empty)" in text
    assert "[... 11808 characters omitted ...]" in text
    assert re.search(
        r"run FAILED duration=\d+\.\d{3} ms\n"
        r"\$ echo slow-start; sleep 30\n"
        r"-- error: logged: `echo slow-start; sleep 30` did not finish within 0.3 s",
        text,
    )
    assert "-- stdout so far (11 chars):\nslow-start" in text
    assert re.search(r"spawn pid=(\d+)\n\$ echo streaming; sleep 300", text)
    assert re.search(r"spawned pid=\d+ stopped \(SIGTERM\) exit=-1 duration=", text)
    assert "-- stdout (0 chars)" not in text


def test_log_is_appended_and_written_as_it_goes(
    make_host: Callable[..., SshHost], tmp_path: Path
) -> None:
    log = tmp_path / "host.log"
    log.write_text("earlier content\n")
    host = make_host("logged", log_path=log)
    host.run("echo first")
    # Line-buffered: the record is on disk before the host is closed.
    assert "$ echo first" in log.read_text()
    assert log.read_text().startswith("earlier content\n")


def test_no_log_without_a_path(make_host: Callable[..., SshHost], tmp_path: Path) -> None:
    host = make_host("quiet")
    host.run("echo nothing")
    host.close()
    assert list(tmp_path.iterdir()) == []
