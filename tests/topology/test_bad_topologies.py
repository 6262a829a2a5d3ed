"""Every malformed topology in ``bad/`` fails with exactly one issue, at the expected place.

Each file in ``bad/`` is ``../good/full-emulated.yaml`` with one fault, and
says on its first line what the loader must report::

    # expect: <line>:<column> <field path, or - for none> <part of the message>

Files that cannot carry that line (an empty file, bytes that are not text)
have their expectation in the tables below.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.topology import Position, TopologyError, load_topology
from bench.topology.issues import format_path

HERE = Path(__file__).parent
BAD = HERE / "bad"
BASE = HERE / "good" / "full-emulated.yaml"

_EXPECT = re.compile(r"^# expect: (\d+):(\d+) (\S+) (.+)$")


@dataclass(frozen=True)
class Expectation:
    line: int
    column: int
    field: str
    text: str


#: Files of ``bad/`` that cannot hold their own ``# expect:`` line.
_IN_TABLE = {
    "empty.yaml": Expectation(1, 1, "-", "the file is empty; expected a mapping"),
}


def _base_bytes(encoding: str) -> bytes:
    return BASE.read_text(encoding="utf-8").encode(encoding)


#: Files that are not text, written by the test: name -> (bytes, expectation).
_BINARY: dict[str, tuple[Callable[[], bytes], Expectation]] = {
    # A gzipped topology: 0x1f 0x8b, and 0x8b is not UTF-8.
    "gzipped.yaml": (
        lambda: gzip.compress(_base_bytes("utf-8"), mtime=0),
        Expectation(1, 2, "-", "not a text file: expected UTF-8 YAML, got byte 0x8b"),
    ),
    # Saved as UTF-16 by an editor: valid UTF-8, but every other byte is NUL.
    "utf16.yaml": (
        lambda: _base_bytes("utf-16-le"),
        Expectation(1, 2, "-", "got the control character U+0000"),
    ),
    # Latin-1 text in a comment: a lone 0xe9 byte.
    "latin1.yaml": (
        lambda: b"# caf\xe9 lab\n" + _base_bytes("utf-8"),
        Expectation(1, 6, "-", "got byte 0xe9 that is not valid UTF-8"),
    ),
}


def _expectation(path: Path) -> Expectation:
    if path.name in _IN_TABLE:
        return _IN_TABLE[path.name]
    first = path.read_text(encoding="utf-8").partition("\n")[0]
    match = _EXPECT.match(first)
    assert match, f"{path.name}: first line is not '# expect: L:C field text': {first!r}"
    line, column, field, text = match.groups()
    return Expectation(int(line), int(column), field, text)


def _assert_one_issue(path: Path, expected: Expectation) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    issues = info.value.issues
    assert len(issues) == 1, f"expected one issue, got:\n{info.value}"
    issue = issues[0]
    assert issue.file == path
    assert issue.position == Position(expected.line, expected.column), str(issue)
    assert (format_path(issue.path) or "-") == expected.field, str(issue)
    assert expected.text in issue.message, str(issue)


CORPUS = sorted(BAD.glob("*.yaml"))


def test_corpus_is_large_and_every_file_has_an_expectation() -> None:
    assert len(CORPUS) >= 24
    assert set(_IN_TABLE) <= {p.name for p in CORPUS}
    for path in CORPUS:
        _expectation(path)


def test_base_of_the_corpus_is_valid() -> None:
    load_topology(BASE)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_bad_topology_reports_one_located_issue(path: Path) -> None:
    _assert_one_issue(path, _expectation(path))


@pytest.mark.parametrize("name", sorted(_BINARY))
def test_non_text_file_reports_one_located_issue(name: str, tmp_path: Path) -> None:
    make, expected = _BINARY[name]
    path = tmp_path / name
    path.write_bytes(make())
    _assert_one_issue(path, expected)


def test_missing_file_is_an_issue_without_position(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    (issue,) = info.value.issues
    assert issue.position is None
    assert str(info.value).startswith(f"{path}: cannot read the file: ")


def test_error_text_starts_with_file_line_column_and_field() -> None:
    path = BAD / "duplicate-host-name.yaml"
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value).startswith(f"{path}:21:5: hosts[1].name: duplicate name 'hv-a'")
    assert info.value.exit_status == 2


def test_error_text_without_field_has_no_empty_field_part() -> None:
    path = BAD / "yaml-unclosed-bracket.yaml"
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert str(info.value).startswith(f"{path}:31:9: YAML syntax error: ")
