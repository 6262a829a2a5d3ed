"""Read a YAML topology file into plain data plus the position of every node.

PyYAML's composer keeps a mark (line, column) on every node; we walk the node
tree ourselves so that each value and each mapping key gets a source position
keyed by its path (``("hosts", 1, "name")``). That lets any later check, from
pydantic's or our own, point at the exact line and column. Walking the tree
ourselves also lets us refuse duplicate keys, which PyYAML silently accepts.

Aliases make the node tree a graph. A file is refused, with a located issue,
when an alias refers to a node that contains it (``a: &x [*x]``, which would
be infinite), when its aliases expand to more than ``MAX_VALUES`` values (a
"billion laughs" bomb), or when it nests deeper than ``MAX_DEPTH`` (PyYAML's
composer and our walker recurse once per level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import yaml

from bench.topology.issues import Position, TopologyError, TopologyIssue
from bench.topology.syntax import describe_reader_error, describe_yaml_error

FieldPath = tuple[str | int, ...]

_WANTED = "expected a mapping with at least 'lab:' and 'hosts:'"
_MERGE_TAG = "tag:yaml.org,2002:merge"

#: Most values a file may expand to, counting each value reached through an alias
#: again; a lab topology has a few hundred.
MAX_VALUES = 100_000
#: Deepest nesting of lists and mappings (and of merge keys merging merge keys) a
#: file may have; a lab topology needs about 6.
MAX_DEPTH = 50

#: Where an alias was written, by what holds it: ``id(key node)`` for a mapping
#: value (merge keys move pairs between mappings, key nodes stay the same), or
#: ``(id(sequence node), index)`` for a list item.
_AliasKey = int | tuple[int, int]


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


_CYCLE = (
    "an alias refers to a node that contains it: expected an alias of a node "
    "defined before it, outside it (the value would be infinite)"
)


class _Mark(Protocol):
    """PyYAML's marks (pure Python or C): 0-based line and column."""

    @property
    def line(self) -> int: ...
    @property
    def column(self) -> int: ...


def _mark_position(mark: _Mark | None) -> Position:
    if mark is None:
        return Position(1, 1)
    return Position(mark.line + 1, mark.column + 1)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, limited in nesting depth and noting where each alias is."""

    def __init__(self, text: str, path: Path) -> None:
        super().__init__(text)
        self.file = path
        self.alias_marks: dict[_AliasKey, Position] = {}
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            # An alias is not composed again: it returns the anchored node, cycles included.
            where = _mark_position(event.start_mark)
            if isinstance(parent, yaml.SequenceNode) and isinstance(index, int):
                self.alias_marks[(id(parent), index)] = where
            elif isinstance(parent, yaml.MappingNode) and isinstance(index, yaml.Node):
                self.alias_marks[id(index)] = where
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                _fail(
                    self.file,
                    _mark_position(event.start_mark),
                    (),
                    f"expected lists and mappings nested at most {MAX_DEPTH} deep, got deeper",
                )
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1


class _Walker:
    """Turns a composed node graph into Python data, recording positions."""

    def __init__(self, loader: _Loader, doc: SourceDocument) -> None:
        self._loader = loader
        self._doc = doc
        # Per mapping node: its own key nodes, as written before merge keys are
        # resolved (an aliased node is flattened once but walked again).
        self._written: dict[int, set[int]] = {}
        self._on_path: set[int] = set()  # the lists and mappings being built just now
        self._merges_checked: set[int] = set()
        self._built = 0
        # The outermost alias being expanded: where an expansion too large is reported.
        self._outer_alias: tuple[Position, FieldPath] | None = None

    def build(self, node: yaml.Node, path: FieldPath, alias: Position | None = None) -> Any:
        """The value of ``node`` at ``path``; ``alias``: where it was written as an alias."""
        where = alias or _mark_position(node.start_mark)
        self._built += 1
        if self._built > MAX_VALUES:
            self._fail(
                *(self._outer_alias or (where, path)),
                f"the file expands to more than {MAX_VALUES} values through its aliases "
                "(an alias bomb?): expected aliases that each stand for a small part of the file",
            )
        if len(path) > MAX_DEPTH:
            self._fail(
                *(self._outer_alias or (where, path)),
                f"expected values nested at most {MAX_DEPTH} deep, got deeper through aliases",
            )
        self._doc.value_positions[path] = _mark_position(node.start_mark)
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self._loader.construct_object(node, deep=True)
        if id(node) in self._on_path:
            self._fail(where, path, _CYCLE)
        self._on_path.add(id(node))
        outermost = alias is not None and self._outer_alias is None
        if outermost:
            self._outer_alias = (where, path)
        if isinstance(node, yaml.MappingNode):
            value: Any = self._mapping(node, path)
        else:
            marks = self._loader.alias_marks
            value = [
                self.build(item, (*path, i), marks.get((id(node), i)))
                for i, item in enumerate(node.value)
            ]
        self._on_path.discard(id(node))
        if outermost:
            self._outer_alias = None
        return value

    def _fail(self, where: Position, path: FieldPath, message: str) -> NoReturn:
        _fail(self._doc.path, where, path, message)

    def _check_merges(self, node: yaml.MappingNode, path: FieldPath, chain: list[int]) -> None:
        """Refuse merge keys (``<<``) that merge a mapping into itself, before PyYAML does."""
        if id(node) in self._merges_checked:
            return
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            marks = self._loader.alias_marks
            sources = [(value_node, marks.get(id(key_node)))]
            if isinstance(value_node, yaml.SequenceNode):
                sources = [
                    (item, marks.get((id(value_node), i)))
                    for i, item in enumerate(value_node.value)
                ]
            for source, alias in sources:
                if not isinstance(source, yaml.MappingNode):
                    continue  # PyYAML's flatten_mapping says what is wrong
                where = alias or _mark_position(source.start_mark)
                if id(source) in self._on_path or id(source) in chain:
                    self._fail(where, path, _CYCLE)
                if len(chain) >= MAX_DEPTH:
                    self._fail(
                        where,
                        path,
                        f"expected merge keys (<<) nested at most {MAX_DEPTH} deep, got deeper",
                    )
                self._check_merges(source, path, [*chain, id(source)])
        self._merges_checked.add(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, Any]:
        written = self._written.setdefault(id(node), {id(k) for k, _ in node.value})
        self._check_merges(node, path, [id(node)])
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
            alias = self._loader.alias_marks.get(id(key_node))
            result[key] = self.build(value_node, (*path, key), alias)
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
        loader = _Loader(text, path)  # refuses control characters right away
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
