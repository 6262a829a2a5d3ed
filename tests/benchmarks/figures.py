"""Benchmark figures: a measured value beside the reference it is compared with."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Comparison:
    """One benchmark: ``figure`` compared with ``reference`` (both measured in this run)."""

    name: str
    figure_label: str
    figure: float
    reference_label: str
    reference: float
    unit: str
    target: str
    met: bool | None  # None: recorded for context, no target
    samples: int

    @property
    def ratio(self) -> float:
        return self.figure / self.reference if self.reference else float("inf")


def median_ms(action: Callable[[], object], samples: int, warmup: int = 3) -> float:
    """Median wall time of ``action`` in milliseconds."""
    for _ in range(warmup):
        action()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def print_table(results: list[Comparison]) -> None:
    header = f"{'benchmark':<22} {'figure':<40} {'reference':<36} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for r in results:
        fig = f"{r.figure_label} {r.figure:.3f} {r.unit}"
        ref = f"{r.reference_label} {r.reference:.3f} {r.unit}"
        verdict = "-" if r.met is None else "met" if r.met else "MISSED"
        print(f"{r.name:<22} {fig:<40} {ref:<36} {r.ratio:>7.3f}  {r.target} ({verdict})")


def write_json(results: list[Comparison], path: Path) -> None:
    """One section per benchmark, figure beside reference, plus the ratio and the verdict."""
    sections = {r.name: {**asdict(r), "ratio": r.ratio} for r in results}
    path.write_text(json.dumps(sections, indent=2) + "\n")
