"""``npabench validate`` and ``npabench schema`` as a user runs them: a separate process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.labkit import npabench

HERE = Path(__file__).parent
BAD_FILES = sorted((HERE / "bad").glob("*.yaml"))
_LOCATED = re.compile(r"^npabench: error: (?P<file>\S+?):(?P<line>\d+):(?P<col>\d+): ")


def test_the_corpus_is_large_enough() -> None:
    assert len(BAD_FILES) >= 20


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda p: p.name)
def test_bad_file_gives_one_located_error_and_exit_2(bad: Path) -> None:
    done = npabench("validate", str(bad), timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"one fault, one error line; got:\n{done.stderr}"
    located = _LOCATED.match(lines[0])
    assert located, lines[0]
    assert located["file"] == str(bad)
    expect = bad.read_text().splitlines()[0] if bad.stat().st_size else ""
    if expect.startswith("# expect: "):
        position = expect.split()[2]
        assert f":{position}: " in lines[0], f"expected at {position}: {lines[0]}"


def test_good_files_validate_with_a_summary() -> None:
    files = sorted(str(p) for p in (HERE.parent.parent / "topologies").glob("*.yaml"))
    done = npabench("validate", *files, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == files
    assert "ok (lab emu, 4 host(s)" in done.stdout


def test_missing_file_is_a_clear_error() -> None:
    done = npabench("validate", "/nonexistent/lab.yaml")
    assert done.returncode == 2
    assert "/nonexistent/lab.yaml" in done.stderr and "cannot read" in done.stderr
    assert "Traceback" not in done.stderr


def test_schema_is_json_schema_with_descriptions() -> None:
    done = npabench("schema", check=True)
    schema = json.loads(done.stdout)
    assert schema["title"] == "Topology"
    assert set(schema["required"]) == {"lab", "hosts"}
    limits = schema["$defs"]["Limits"]["properties"]
    assert limits["blackout_ms"]["default"] == 500.0
    assert "longest gap" in limits["blackout_ms"]["description"]
