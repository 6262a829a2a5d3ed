"""Read a YAML topology file into plain data plus the position of every node.

PyYAML's composer keeps a mark (line, column) on every node; we walk the node
tree ourselves so that each value and each mapping key gets a source position
keyed by its path (``("hosts", 1, "name")``). That lets any later check, from
pydantic's or our own, point at the exact line and column. Walking the tree
ourselves also lets us refuse duplicate keys, which PyYAML silently accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.topology.issues import Position, TopologyError, TopologyIssue

FieldPath = tuple[str | int, ...]


@dataclass
class SourceDocument:
    """The data of one YAML file and where each part of it came from."""

    path: Path
    data: Any
    value_positions: dict[FieldPath, Position] = field(default_factory=dict)
    key_positions: dict[FieldPath, Position] = field(default_factory=dict)

    def position_of(self, path: FieldPath) -> Position:
        """Best position for ``path``: the key if known, else the value, else the nearest parent.

        A missing field has no position of its own; pointing at its parent
        mapping is what a reader needs ("this host lacks a name").
        """
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.key_positions:
                return self.key_positions[prefix]
            if prefix in self.value_positions:
                return self.value_positions[prefix]
        return Position(1, 1)

    def issue(self, path: FieldPath, message: str) -> TopologyIssue:
        """An issue at ``path`` of this document."""
        return TopologyIssue(self.path, self.position_of(path), path, message)


def _mark_position(mark: yaml.Mark | None) -> Position:
    if mark is None:
        return Position(1, 1)
    return Position(mark.line + 1, mark.column + 1)


class _Walker:
    """Turns a composed node tree into Python data, recording positions."""

    def __init__(self, loader: yaml.SafeLoader, doc: SourceDocument) -> None:
        self._loader = loader
        self._doc = doc

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        self._doc.value_positions[path] = _mark_position(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[Any, Any]:
        self._loader.flatten_mapping(node)  # resolve YAML merge keys (<<)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise TopologyError(
                    [
                        TopologyIssue(
                            self._doc.path,
                            _mark_position(key_node.start_mark),
                            path,
                            "a mapping key must be a plain word, not a list or mapping",
                        )
                    ]
                )
            key = self._loader.construct_object(key_node)
            key_path = (*path, str(key))
            if key in result:
                first = self._doc.key_positions[key_path]
                raise TopologyError(
                    [
                        TopologyIssue(
                            self._doc.path,
                            _mark_position(key_node.start_mark),
                            key_path,
                            f"duplicate key {key!r} (first given at line {first.line})",
                        )
                    ]
                )
            self._doc.key_positions[key_path] = _mark_position(key_node.start_mark)
            result[key] = self.build(value_node, key_path)
        return result


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise TopologyError(
            [
                TopologyIssue(
                    path,
                    Position(line, column),
                    (),
                    f"not a text file: byte 0x{raw[err.start]:02x} is not valid UTF-8 "
                    "(a topology file is UTF-8 YAML)",
                )
            ]
        ) from None


def read_yaml(path: Path) -> SourceDocument:
    """Read ``path`` as one YAML document, or raise TopologyError saying where it is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TopologyError(
            [TopologyIssue(path, None, (), f"cannot read the file: {err.strerror}")]
        ) from None
    text = _decode(path, raw)
    doc = SourceDocument(path=path, data=None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise TopologyError(
                [
                    TopologyIssue(
                        path,
                        Position(1, 1),
                        (),
                        "the file is empty; expected a mapping with at least 'lab:' and 'hosts:'",
                    )
                ]
            )
        doc.data = _Walker(loader, doc).build(node, ())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        what = err.problem or "invalid YAML"
        context = f" {err.context}" if err.context else ""
        raise TopologyError(
            [TopologyIssue(path, _mark_position(mark), (), f"YAML syntax error: {what}{context}")]
        ) from None
    except yaml.YAMLError as err:
        raise TopologyError([TopologyIssue(path, None, (), f"YAML error: {err}")]) from None
    finally:
        loader.dispose()
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__ if doc.data is not None else "nothing"
        raise TopologyError(
            [
                TopologyIssue(
                    path,
                    doc.value_positions.get((), Position(1, 1)),
                    (),
                    f"expected a mapping with 'lab:' and 'hosts:' at the top level, got {kind}",
                )
            ]
        )
    return doc
