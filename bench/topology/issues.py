"""How the bench reports a fault in a topology file: file:line:column, field path, message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in a source file."""

    line: int
    column: int


def format_path(path: Sequence[str | int]) -> str:
    """``("hosts", 1, "name")`` -> ``hosts[1].name``: how a reader names a field."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class TopologyIssue:
    """One fault in a topology file."""

    file: Path
    position: Position | None
    path: tuple[str | int, ...]
    message: str

    def __str__(self) -> str:
        where = str(self.file)
        if self.position is not None:
            where += f":{self.position.line}:{self.position.column}"
        field = format_path(self.path)
        return f"{where}: {field}: {self.message}" if field else f"{where}: {self.message}"


class TopologyError(UsageError):
    """A topology file is not valid; carries every fault found, in file order."""

    def __init__(self, issues: Sequence[TopologyIssue]) -> None:
        self.issues = sorted(
            issues,
            key=lambda i: (i.position.line, i.position.column) if i.position else (0, 0),
        )
        super().__init__("\n".join(str(i) for i in self.issues))
