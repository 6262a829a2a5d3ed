"""Topology file -> validated ``Topology``, or one ``TopologyError`` listing every fault.

Three stages, each reporting with file:line:column and field path:
YAML syntax (``source.py``), field rules (pydantic, ``model.py``), and the
rules across fields (``checks.py``).
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from bench.topology.checks import check_topology
from bench.topology.issues import TopologyError, TopologyIssue
from bench.topology.model import Topology
from bench.topology.source import FieldPath, SourceDocument, read_yaml

#: Human wording for the name patterns used in ``model.py``.
_PATTERN_TEXT = {
    r"^[a-z][a-z0-9-]{0,14}$": "a name of lower-case letters, digits and '-', "
    "starting with a letter, at most 15 characters",
    r"^[a-z][a-z0-9]{0,5}$": "a lab name of 1-6 lower-case letters and digits, starting "
    "with a letter (it prefixes every namespace and interface the bench creates)",
    r"^[a-z][a-z0-9_.-]{0,14}$": "a Linux interface name (lower-case, at most 15 characters)",
    r"^[a-z][a-z0-9-]*$": "a model name of lower-case letters, digits and '-'",
}


def load_topology(path: str | Path) -> Topology:
    """Load and fully validate the topology file at ``path``."""
    topo, _ = load_topology_with_source(path)
    return topo


def load_topology_with_source(path: str | Path) -> tuple[Topology, SourceDocument]:
    """Like ``load_topology``, also returning the source for locating later findings."""
    doc = read_yaml(Path(path))
    try:
        topo = Topology.model_validate(doc.data)
    except ValidationError as err:
        raise TopologyError(_issues_from_pydantic(doc, err)) from None
    issues = check_topology(topo, doc)
    if issues:
        raise TopologyError(issues)
    return topo, doc


def _issues_from_pydantic(doc: SourceDocument, err: ValidationError) -> list[TopologyIssue]:
    errors = err.errors()
    # Pydantic re-checks a list's length after dropping its invalid items; a
    # "too short" list is only worth reporting when nothing inside it failed.
    inner = {tuple(e["loc"][:n]) for e in errors for n in range(len(e["loc"]))}
    kept = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in inner)]
    return [_issue_from_pydantic(doc, e) for e in kept]


def _issue_from_pydantic(doc: SourceDocument, error: ErrorDetails) -> TopologyIssue:
    path: FieldPath = tuple(error["loc"])
    kind = error["type"]
    got = error.get("input")
    if kind == "missing":
        parent, name = path[:-1], path[-1]
        return (
            doc.issue(parent, f"missing required field {name!r}")
            if parent
            else doc.issue(path, f"missing required top-level section {name!r}")
        )
    if kind == "extra_forbidden":
        allowed = _allowed_keys(path[:-1])
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return doc.issue(path, f"unknown key {path[-1]!r}{hint}")
    if kind == "string_pattern_mismatch":
        pattern = str((error.get("ctx") or {}).get("pattern", ""))
        expected = _PATTERN_TEXT.get(pattern, f"a string matching {pattern}")
        return doc.issue(path, f"expected {expected}, got {got!r}")
    if kind == "too_short":
        least = (error.get("ctx") or {}).get("min_length", 1)
        return doc.issue(path, f"expected at least {least} item(s), got {_show(got)}")
    message = error["msg"].removeprefix("Value error, ")
    if (
        kind.endswith("_type")
        or kind.startswith(("ip_", "int_", "float_", "bool_"))
        or kind
        in {
            "literal_error",
            "greater_than",
            "greater_than_equal",
            "less_than_equal",
            "too_short",
            "string_too_short",
        }
    ):
        message = f"{message}, got {_show(got)}"
    return doc.issue(path, message)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _allowed_keys(path: FieldPath) -> list[str]:
    """The keys the model accepts at ``path`` (for "did you mean" style hints)."""
    model: Any = Topology
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None`` or ``tuple[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (tuple, list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
