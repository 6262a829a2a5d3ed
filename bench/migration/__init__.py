"""The migration orchestrator: a live migration under traffic, its timeline and its verdict."""

from bench.migration.orchestrator import (
    MigrationRun,
    TrafficPlan,
    describe,
    migrate_under_traffic,
    offers_vf,
    timeline_of,
)
from bench.migration.verdict import Expectation, Verdict

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
