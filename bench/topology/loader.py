"""Topology file -> validated ``Topology``, or one ``TopologyError`` listing every fault.

Three stages, each reporting with file:line:column and field path:
YAML syntax (``source.py``), field rules (pydantic, ``model.py``, worded by
``messages.py``), and the rules across fields (``checks.py``). A later stage
runs only when the earlier ones found nothing, so one fault is one issue.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from bench.topology.checks import check_topology
from bench.topology.issues import TopologyError, TopologyIssue
from bench.topology.messages import describe
from bench.topology.model import Topology
from bench.topology.source import FieldPath, SourceDocument, read_yaml


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
    message = describe(error)
    if error["type"] == "missing" and len(path) > 1:
        # A missing field has no line of its own: point at the mapping lacking it.
        return TopologyIssue(doc.path, doc.position_of(path[:-1]), path, message)
    return doc.issue(path, message)
