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
from typing import Any, NoReturn

import yaml

from bench.topology.issues import Position, TopologyError, TopologyIssue
from bench.topology.syntax import describe_reader_error, describe_yaml_error

FieldPath = tuple[str | int, ...]

_WANTED = "expected a mapping with at least 'lab:' and 'hosts:'"


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


def _fail(file: Path, position: Position | None, path: FieldPath, message: str) -> NoReturn:
    raise TopologyError([TopologyIssue(file, position, path, message)])


def _mark_position(mark: yaml.Mark | None) -> Position:
    if mark is None:
        return Position(1, 1)
    return Position(mark.line + 1, mark.column + 1)


class _Walker:
    """Turns a composed node tree into Python data, recording positions."""

    def __init__(self, loader: yaml.SafeLoader, doc: SourceDocument) -> None:
        self._loader = loader
        self._doc = doc
        # Per mapping node: its own key nodes, as written before merge keys are
        # resolved (an aliased node is flattened once but walked again).
        self._written: dict[int, set[int]] = {}

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        self._doc.value_positions[path] = _mark_position(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, Any]:
        written = self._written.setdefault(id(node), {id(k) for k, _ in node.value})
        self._loader.flatten_mapping(node)  # resolve YAML merge keys (<<): they come first
        chosen: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            earlier = chosen.get(key)
            if earlier is not None and id(earlier[0]) in written and id(key_node) in written:
                first = _mark_position(earlier[0].start_mark)
                _fail(
                    self._doc.path,
                    _mark_position(key_node.start_mark),
                    (*path, key),
                    f"duplicate key {key!r}: expected each key once per mapping, "
                    f"got it again (first given at line {first.line})",
                )
            chosen[key] = (key_node, value_node)  # a key written here overrides a merged one
        result: dict[str, Any] = {}
        for key, (key_node, value_node) in chosen.items():
            self._doc.key_positions[(*path, key)] = _mark_position(key_node.start_mark)
            result[key] = self.build(value_node, (*path, key))
        return result

    def _key(self, key_node: yaml.Node, path: FieldPath) -> str:
        where = _mark_position(key_node.start_mark)
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
            _fail(self._doc.path, where, path, f"expected a word as mapping key, got {kind}")
        key = self._loader.construct_object(key_node)
        if not isinstance(key, str):
            _fail(
                self._doc.path,
                where,
                path,
                f"expected a word as mapping key, got {key!r} "
                "(YAML reads this unquoted key as a non-string; put it in quotes)",
            )
        return key


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        _fail(
            path,
            Position(line, column),
            (),
            f"not a text file: expected UTF-8 YAML, got byte 0x{raw[err.start]:02x} "
            "that is not valid UTF-8",
        )


def _text_position(text: str, index: int) -> Position:
    line = text.count("\n", 0, index) + 1
    return Position(line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _empty_message(text: str) -> str:
    if not text.strip():
        return f"the file is empty; {_WANTED}"
    return f"the file holds only comments; {_WANTED}"


def read_yaml(path: Path) -> SourceDocument:
    """Read ``path`` as one YAML document, or raise TopologyError saying where it is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        _fail(path, None, (), f"cannot read the file: {err.strerror}")
    text = _decode(path, raw)
    doc = SourceDocument(path=path, data=None)
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters right away
    except yaml.reader.ReaderError as err:
        _fail(path, _text_position(text, err.position), (), describe_reader_error(err))
    try:
        node = loader.get_single_node()
        if node is None:
            _fail(path, Position(1, 1), (), _empty_message(text))
        doc.data = _Walker(loader, doc).build(node, ())
    except yaml.MarkedYAMLError as err:
        mark, message = describe_yaml_error(err)
        _fail(path, _mark_position(mark), (), message)
    except yaml.YAMLError as err:
        _fail(path, None, (), f"YAML error: {err}")
    finally:
        loader.dispose()
    if not isinstance(doc.data, dict):
        got = {list: "a list", type(None): "an empty document"}.get(
            type(doc.data), f"the single value {doc.data!r}"
        )
        _fail(path, doc.value_positions.get((), Position(1, 1)), (), f"{_WANTED}, got {got}")
    return doc
