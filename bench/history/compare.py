"""Two runs side by side: verdicts that changed and figures that moved beyond a tolerance.

A regression — what makes ``npabench compare`` exit 1 for a nightly job — is
a test that fails in the newer run and did not in the older one (or is new and
fails), or a figure that got worse by more than the tolerance. Whether a
figure is better higher or lower is read from its name: rates (``pps``,
``bps``, ``throughput``, ``rate``) are better higher; everything else a test
records (blackout, gap, downtime, loss, time taken) is better lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.history.store import StoredTest

FAILING = frozenset({"failed", "error"})
HIGHER_IS_BETTER = ("pps", "bps", "throughput", "rate")


def higher_is_better(figure: str) -> bool:
    lowered = figure.lower()
    return any(word in lowered for word in HIGHER_IS_BETTER)


@dataclass(frozen=True)
class VerdictChange:
    """A test whose outcome differs between the two runs."""

    nodeid: str
    catalogue: tuple[str, ...]
    before: str  # an outcome, or "absent"
    after: str
    message: str


@dataclass(frozen=True)
class FigureMove:
    """A figure of one test that moved beyond the tolerance, and whether that is worse."""

    nodeid: str
    catalogue: tuple[str, ...]
    name: str
    before: float
    after: float
    worse: bool

    @property
    def relative(self) -> float:
        """The change relative to ``before`` (inf when it moved away from 0)."""
        if self.before == 0:
            return math.inf if self.after != 0 else 0.0
        return (self.after - self.before) / abs(self.before)


@dataclass
class Comparison:
    """Everything that changed from the older run to the newer."""

    newly_failing: list[VerdictChange] = field(default_factory=list)
    newly_passing: list[VerdictChange] = field(default_factory=list)
    other_changes: list[VerdictChange] = field(default_factory=list)
    figures_worse: list[FigureMove] = field(default_factory=list)
    figures_better: list[FigureMove] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return bool(self.newly_failing or self.figures_worse)


def _verdicts(older: dict[str, StoredTest], newer: dict[str, StoredTest], out: Comparison) -> None:
    for nodeid in sorted(set(older) | set(newer)):
        a, b = older.get(nodeid), newer.get(nodeid)
        before = a.outcome if a else "absent"
        after = b.outcome if b else "absent"
        if before == after:
            continue
        known = b or a
        assert known is not None
        change = VerdictChange(nodeid, known.catalogue, before, after, b.message if b else "")
        if after in FAILING and before not in FAILING:
            out.newly_failing.append(change)
        elif before in FAILING and after == "passed":
            out.newly_passing.append(change)
        else:
            out.other_changes.append(change)


def _moved(before: float, after: float, tolerance: float, abs_tolerance: float) -> bool:
    delta = abs(after - before)
    if delta <= abs_tolerance:
        return False
    return before == 0 or delta / abs(before) > tolerance


def compare_runs(
    older: dict[str, StoredTest],
    newer: dict[str, StoredTest],
    *,
    tolerance: float,
    abs_tolerance: float = 0.0,
) -> Comparison:
    """What changed from ``older`` to ``newer`` (tests by node id).

    A figure moved when it changed by more than ``tolerance`` (relative, 0.2 = 20 %)
    and by more than ``abs_tolerance`` (in its own unit).
    """
    out = Comparison()
    _verdicts(older, newer, out)
    for nodeid in sorted(set(older) & set(newer)):
        a, b = older[nodeid], newer[nodeid]
        for name in sorted(set(a.figures) & set(b.figures)):
            x, y = a.figures[name], b.figures[name]
            if not _moved(x, y, tolerance, abs_tolerance):
                continue
            worse = y < x if higher_is_better(name) else y > x
            move = FigureMove(nodeid, b.catalogue, name, x, y, worse)
            (out.figures_worse if worse else out.figures_better).append(move)
    return out
