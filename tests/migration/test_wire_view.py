"""Lost frames placed against the hypervisor's downtime (``wire_view``), on hand-made results.

A paced sender drifts: after seconds of traffic the k-th frame no longer arrives
k / R after the first. The checker's record of the arrival that jumped over a run
of lost seqs (its seq, rx time and the sender's stamp) lets the run be timed from
when that arrival was sent; without it the nominal rate is all there is.
"""

from __future__ import annotations

from bench.migration.wire import wire_view
from bench.traffic.results import DirectionResult

T0 = 1_795_000_000.0
RATE = 1000.0


def result(
    missing: tuple[tuple[int, int], ...], ends: tuple[tuple[int, int, int] | None, ...] = ()
) -> DirectionResult:
    lost = sum(hi - lo + 1 for lo, hi in missing)
    return DirectionResult(
        name="tg -> vm1", flow=1, sent=5000, received=5000 - lost, unique=5000 - lost,
        lost=lost, duplicates=0, reordered=0, corrupt=0, longest_gap_ms=14.0, gap_end_ms=0.0,
        latency_p50_us=10, latency_p99_us=20, latency_max_us=30, send_pps=RATE,
        missing=missing, ring_drops=0, first_rx_ns=int(T0 * 1e9), timeline=(),
        missing_ends=ends,
    )  # fmt: skip


def ns(t: float) -> int:
    return int(t * 1e9)


def jump(seq: int, sent: float, received: float | None = None) -> tuple[int, int, int]:
    """The arrival ``seq`` that jumped a run: sent at ``sent``, received 0.5 ms later
    unless said otherwise."""
    return (seq, ns(received if received is not None else sent + 0.0005), ns(sent))


# The sender fell 60 ms behind its nominal pace before the migration: seqs 2000..2012
# were lost in a downtime that began 2.060 s after the first arrival, and 2013 was sent
# at 2.0735 s.
DOWNTIME = (T0 + 2.060, T0 + 2.0657)
RUN = ((2000, 2012),)
JUMPED_BY = (jump(2013, T0 + 2.0735),)


def test_a_run_is_timed_back_from_the_arrival_that_jumped_it() -> None:
    view = wire_view(result(RUN, JUMPED_BY), DOWNTIME, slack_s=0.020)
    assert (view.lost_inside, view.lost_outside) == (13, 0)
    assert (view.lost_in_downtime, view.lost_declared) == (13, ())


def test_a_late_delivery_of_that_arrival_does_not_move_the_run() -> None:
    """The resumed guest first works through what its stop held: the arrival that jumped
    the run is received 45 ms after it was sent. Timed from its rx time the run would
    land past the window; from its tx stamp it is where it was lost."""
    late_arrival = (jump(2013, T0 + 2.0735, received=T0 + 2.1185),)
    view = wire_view(result(RUN, late_arrival), DOWNTIME, slack_s=0.020)
    assert (view.lost_inside, view.lost_outside) == (13, 0)


def test_without_that_arrival_the_nominal_pace_is_used_and_drift_shows() -> None:
    """The same run timed from the first arrival lands 60 ms early: outside the window."""
    view = wire_view(result(RUN), DOWNTIME, slack_s=0.020)
    assert (view.lost_inside, view.lost_outside) == (0, 13)


def test_a_run_outside_every_window_stays_outside() -> None:
    late = ((4000, 4001),)
    jumped = (jump(4002, T0 + 4.0695),)
    view = wire_view(result(RUN + late, JUMPED_BY + jumped), DOWNTIME, slack_s=0.020)
    assert (view.lost_inside, view.lost_outside) == (13, 2)


def test_a_declared_window_counts_as_inside() -> None:
    late = ((4000, 4001),)
    jumped = (jump(4002, T0 + 4.0695),)
    declared = ((T0 + 4.060, T0 + 4.070),)
    view = wire_view(result(RUN + late, JUMPED_BY + jumped), DOWNTIME, 0.010, also=declared)
    assert (view.lost_inside, view.lost_outside, view.declared) == (15, 0, 1)
    # told apart: 13 in the downtime, 2 in the declared window
    assert (view.lost_in_downtime, view.lost_declared) == (13, (2,))
