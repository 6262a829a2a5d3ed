"""The timeline contract: what a test hands ``record_timeline`` and the report draws.

A timeline is a plain JSON-serialisable dict, so a test (or the migration
orchestrator) can build one from anything it measured::

    {"title": str, "kind": "fallback" | "migration" | str,
     "t0": float,          # epoch seconds the relative times below count from
     "series": [{"name": "tg->vm1", "unit": "pps", "points": [[t_rel_s, value], ...]}],
     "events": [{"t": t_rel_s, "label": "VF quiesced", "source": "hypervisor"}],
     "blackouts": [{"name": "tg->vm1", "start": t_rel_s, "end": t_rel_s}],
     "figures": {"downtime_ms (hypervisor)": 12.3}}   # optional

It is checked here, before it is written, so a malformed one fails the test
that made it with the key and what is wrong, not the report much later.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.errors import UsageError

REQUIRED = ("title", "kind", "t0", "series", "events", "blackouts")
OPTIONAL = ("figures",)


class TimelineError(UsageError):
    """A timeline dict that does not follow the contract (names the key and the fault)."""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        place = "" if where == "timeline" else f" {where}:"
        raise TimelineError(f"timeline:{place} {message}")


def _text(item: dict[str, Any], key: str, where: str) -> None:
    _require(key in item, where, f"missing key {key!r}")
    _require(isinstance(item[key], str), f"{where}.{key}", f"must be a string, got {item[key]!r}")


def _num(item: dict[str, Any], key: str, where: str) -> None:
    _require(key in item, where, f"missing key {key!r}")
    value = item[key]
    _require(_number(value), f"{where}.{key}", f"must be a finite number, got {value!r}")


def _entries(timeline: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entries = timeline[key]
    _require(isinstance(entries, list), key, f"must be a list, got {type(entries).__name__}")
    for i, entry in enumerate(entries):
        _require(isinstance(entry, dict), f"{key}[{i}]", f"must be an object, got {entry!r}")
    return list(entries)


def _check_series(timeline: dict[str, Any]) -> None:
    for i, series in enumerate(_entries(timeline, "series")):
        where = f"series[{i}]"
        _text(series, "name", where)
        _text(series, "unit", where)
        _require("points" in series, where, "missing key 'points'")
        points = series["points"]
        _require(isinstance(points, list), f"{where}.points", "must be a list of [t, value]")
        for j, point in enumerate(points):
            ok = isinstance(point, list | tuple) and len(point) == 2
            ok = ok and _number(point[0]) and _number(point[1])
            _require(ok, f"{where}.points[{j}]", f"must be [t_rel_s, value] numbers, got {point!r}")


def _check_events_and_blackouts(timeline: dict[str, Any]) -> None:
    for i, event in enumerate(_entries(timeline, "events")):
        _num(event, "t", f"events[{i}]")
        _text(event, "label", f"events[{i}]")
        _text(event, "source", f"events[{i}]")
    for i, blackout in enumerate(_entries(timeline, "blackouts")):
        where = f"blackouts[{i}]"
        _text(blackout, "name", where)
        _num(blackout, "start", where)
        _num(blackout, "end", where)
        start, end = blackout["start"], blackout["end"]
        _require(end >= start, where, f"end {end} is before start {start}")


def validate_timeline(timeline: object) -> dict[str, Any]:
    """Check ``timeline`` against the contract; return it. TimelineError names the fault."""
    _require(isinstance(timeline, dict), "timeline", f"must be a dict, got {type(timeline)}")
    assert isinstance(timeline, dict)
    for key in REQUIRED:
        _require(key in timeline, "timeline", f"missing key {key!r} (required: {REQUIRED})")
    unknown = sorted(set(timeline) - set(REQUIRED) - set(OPTIONAL))
    _require(not unknown, "timeline", f"unknown key(s) {unknown}")
    _text(timeline, "title", "timeline")
    _text(timeline, "kind", "timeline")
    _num(timeline, "t0", "timeline")
    _check_series(timeline)
    _check_events_and_blackouts(timeline)
    figures = timeline.get("figures", {})
    _require(isinstance(figures, dict), "figures", "must be an object of name -> number")
    for name, value in figures.items():
        _require(isinstance(name, str), "figures", f"key {name!r} must be a string")
        _require(_number(value), f"figures[{name!r}]", f"must be a finite number, got {value!r}")
    try:
        json.dumps(timeline)
    except (TypeError, ValueError) as err:
        raise TimelineError(f"timeline: not JSON-serialisable: {err}") from None
    return timeline


def write_timeline(directory: Path, timeline: object) -> Path:
    """Validate ``timeline`` and write it as the next free ``timeline-<n>.json`` there."""
    checked = validate_timeline(timeline)
    directory.mkdir(parents=True, exist_ok=True)
    n = 1
    while (directory / f"timeline-{n}.json").exists():
        n += 1
    path = directory / f"timeline-{n}.json"
    path.write_text(json.dumps(checked, indent=1) + "\n")
    return path


def read_timeline(path: Path) -> dict[str, Any]:
    """A timeline file, checked again (a file edited by hand is named in the error)."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TimelineError(f"{path}: not a readable timeline: {err}") from None
    try:
        return validate_timeline(raw)
    except TimelineError as err:
        raise TimelineError(f"{path}: {err}") from None


def figure_names(timeline: dict[str, Any]) -> dict[str, float]:
    """The timeline's figures as the run records them: ``"<title>: <name>" -> value``."""
    figures = timeline.get("figures", {})
    return {f"{timeline['title']}: {name}": float(value) for name, value in figures.items()}
