"""The migration orchestrator: a live migration under traffic, its timeline and its verdict.

The names below are imported on first use (module ``__getattr__``): the orchestrator pulls the
lab and the traffic engine (scapy), and ``npabench`` imports ``bench.migration.command`` for
its parser only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.migration.orchestrator import (
        MigrationRun,
        TrafficPlan,
        describe,
        migrate_under_traffic,
        offers_vf,
        timeline_of,
    )
    from bench.migration.verdict import Expectation, Verdict

_HOMES = {
    "Expectation": "bench.migration.verdict",
    "MigrationRun": "bench.migration.orchestrator",
    "TrafficPlan": "bench.migration.orchestrator",
    "Verdict": "bench.migration.verdict",
    "describe": "bench.migration.orchestrator",
    "migrate_under_traffic": "bench.migration.orchestrator",
    "offers_vf": "bench.migration.orchestrator",
    "timeline_of": "bench.migration.orchestrator",
}

__all__ = [
    "Expectation",
    "MigrationRun",
    "TrafficPlan",
    "Verdict",
    "describe",
    "migrate_under_traffic",
    "offers_vf",
    "timeline_of",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups do not come here
    return value
