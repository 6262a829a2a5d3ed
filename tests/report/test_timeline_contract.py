"""The timeline contract: a malformed dict is refused naming the key; traffic becomes one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.report.timeline import TimelineError, read_timeline, validate_timeline, write_timeline
from bench.report.traffic_timeline import TimelineEvent, device_events, timeline_from_traffic
from bench.traffic.results import DirectionResult


def good() -> dict[str, Any]:
    return {
        "title": "FB-01 round trip",
        "kind": "fallback",
        "t0": 1_700_000_000.0,
        "series": [{"name": "tg->vm1", "unit": "pps", "points": [[0.0, 2000], [0.01, 0]]}],
        "events": [{"t": 0.5, "label": "VF quiesced", "source": "hypervisor"}],
        "blackouts": [{"name": "tg->vm1", "start": 0.5, "end": 0.52}],
        "figures": {"downtime_ms (hypervisor)": 12.3},
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.pop("t0"), "missing key 't0'"),
        (lambda t: t.update(kind=3), "timeline.kind: must be a string"),
        (lambda t: t.update(extra=1), "unknown key(s) ['extra']"),
        (lambda t: t["series"][0]["points"].append([1.0]), "series[0].points[2]"),
        (lambda t: t["series"][0]["points"].append([1.0, "x"]), "series[0].points[2]"),
        (lambda t: t["series"][0].pop("unit"), "series[0]: missing key 'unit'"),
        (lambda t: t["events"][0].update(t=float("nan")), "events[0].t: must be a finite"),
        (lambda t: t["events"].append("boom"), "events[1]: must be an object"),
        (lambda t: t["blackouts"][0].update(end=0.1), "blackouts[0]: end 0.1 is before start"),
        (lambda t: t["figures"].update(x="fast"), "figures['x']: must be a finite number"),
        (lambda t: t.update(series={}), "series: must be a list"),
    ],
)
def test_a_malformed_timeline_is_refused_naming_the_key(change: Any, expected: str) -> None:
    timeline = good()
    change(timeline)
    with pytest.raises(TimelineError) as err:
        validate_timeline(timeline)
    assert expected in str(err.value)


def test_written_as_numbered_files_and_read_back(tmp_path: Path) -> None:
    first, second = write_timeline(tmp_path, good()), write_timeline(tmp_path, good())
    assert (first.name, second.name) == ("timeline-1.json", "timeline-2.json")
    assert read_timeline(first) == good()
    first.write_text(json.dumps({**good(), "events": [{"t": 1}]}))
    with pytest.raises(TimelineError, match=r"timeline-1.json: timeline: events\[0\]"):
        read_timeline(first)


def direction(name: str, first_rx_s: float, counts: list[int], gap_ms: float, gap_end_ms: float):
    return DirectionResult(
        name=name, flow=1, sent=sum(counts), received=sum(counts), unique=sum(counts), lost=0,
        duplicates=0, reordered=0, corrupt=0, longest_gap_ms=gap_ms, gap_end_ms=gap_end_ms,
        latency_p50_us=10, latency_p99_us=20, latency_max_us=30, send_pps=2000.0, missing=(),
        ring_drops=0, first_rx_ns=int(first_rx_s * 1e9), timeline=tuple(counts),
    )  # fmt: skip


def test_traffic_becomes_pps_series_a_blackout_and_events() -> None:
    # 2 frames per ms for 100 ms, nothing for 40 ms, then 2 per ms again for 60 ms.
    counts = [2] * 100 + [0] * 40 + [2] * 60
    start = 1_700_000_000.0
    tg = direction("tg->vm1", start, counts, gap_ms=40.5, gap_end_ms=140.0)
    vm = direction("vm1->tg", start + 0.005, [2] * 200, gap_ms=0.6, gap_end_ms=50.0)
    events = [TimelineEvent(start + 0.1, "switch to emulation requested")]
    timeline = timeline_from_traffic([tg, vm], title="t", kind="fallback", events=events)
    assert timeline["t0"] == start
    tg_series, vm_series = timeline["series"]
    assert tg_series["unit"] == "pps" and len(tg_series["points"]) == 20
    assert tg_series["points"][0] == [0.0, 2000.0]
    assert tg_series["points"][10] == [0.1, 0.0]  # inside the gap
    assert vm_series["points"][0][0] == pytest.approx(0.005)
    (blackout,) = timeline["blackouts"]  # vm1->tg's 0.6 ms gap is its pacing, no blackout
    assert blackout["name"] == "tg->vm1"
    assert blackout["start"] == pytest.approx(0.0995) and blackout["end"] == pytest.approx(0.14)
    assert timeline["events"] == [
        {"t": pytest.approx(0.1), "label": "switch to emulation requested", "source": "bench"}
    ]
    assert timeline["figures"]["longest gap ms tg->vm1"] == 40.5
    assert timeline["figures"]["lost frames vm1->tg"] == 0


def test_device_events_inside_the_window_become_labelled_events() -> None:
    log = [
        {"t": 9.0, "host": "hv-a", "event": "device-started"},
        {"t": 10.5, "host": "hv-a", "event": "vf-quiesced", "vf": 1, "reason": None},
        {"t": 11.0, "host": "hv-a", "event": "emulation-active", "reason": "requested"},
    ]
    picked = device_events(log, since=10.0, until=12.0)
    assert [(e.at, e.label, e.source) for e in picked] == [
        (10.5, "vf-quiesced (vf 1)", "hypervisor"),
        (11.0, "emulation-active (reason requested)", "hypervisor"),
    ]
