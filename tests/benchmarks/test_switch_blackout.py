"""The planned-switch blackout figure (``data_path.blackout_per_switch``) from the
checker's gap list: what the data path held frames up, not what the sender stalled."""

from __future__ import annotations

from tests.benchmarks.data_path import GAPS_OVER_MS, blackout_per_switch, held_up_ms

MS = 1_000_000


def flow(*gaps: tuple[int, int, int, int]) -> dict[str, object]:
    return {"gaps": [list(gap) for gap in gaps], "gaps_truncated": False}


def test_each_switch_takes_the_most_held_up_gap_that_overlaps_it() -> None:
    switches = [(100 * MS, 110 * MS), (200 * MS, 210 * MS), (300 * MS, 310 * MS)]
    gaps = flow(
        (99 * MS, 5 * MS, 5 * MS, 1),  # ends before the first switch: not its
        (104 * MS, 3 * MS, 1 * MS, 1),  # held up 2 ms during the first
        (108 * MS, 4 * MS, 4 * MS, 1),  # the sender's stall: nothing held up
        (212 * MS, 6 * MS, 0, 1),  # starts inside the second, held up 6 ms
        (250 * MS, 9 * MS, 0, 1),  # between switches: nobody's
    )
    assert blackout_per_switch(gaps, switches) == [2.0, 6.0, GAPS_OVER_MS]
    # the plain gaps, the sender's stalls included
    assert blackout_per_switch(gaps, switches, raw=True) == [4.0, 6.0, GAPS_OVER_MS]


def test_a_gap_over_lost_frames_counts_whole() -> None:
    gaps = flow((105 * MS, 3 * MS, 3 * MS, 4))
    assert blackout_per_switch(gaps, [(100 * MS, 110 * MS)]) == [3.0]


def test_a_window_s_most_held_up_gap_in_either_direction() -> None:
    flows = {"a": flow((10 * MS, 4 * MS, 3 * MS, 1)), "b": flow((20 * MS, 3 * MS, 0, 1))}
    assert held_up_ms(flows) == 3.0
    assert held_up_ms({"a": flow()}) == GAPS_OVER_MS
