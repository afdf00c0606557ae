"""Golden sequences of the mixing schedule: the exact source of every sequence, not only its properties.

The property tests (test_schedule_properties.py) hold for many schedules; these pin THE schedule, so a
change of tie-break or rounding (which would silently change which data a run trains on, and break
resume across versions) fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainkit.data.schedule import (
    WEIGHT_RESOLUTION,
    ScheduleCursor,
    counts_at,
    integer_weights,
    schedule,
    source_positions,
)


def sources_of(weights: list[float], start: int, stop: int) -> str:
    return "".join(str(int(j)) for j in schedule(weights, start, stop))


def test_50_30_20_by_hand():
    # A = 10, a = (5, 3, 2). Sequence k of source j is released at floor((k-1)A/a_j), due by ceil(kA/a_j):
    # t0 {0:d2 1:d4 2:d5} -> 0; t1 -> 1 (d4); t2 0 released (d4) beats 2 (d5) -> 0; t3 1 is due 7, 2 due 5 -> 2;
    # t4 0 (d6) -> 0; t5 1 (d7) -> 1; t6 0 (d8) -> 0; t7 1 and 2 both due 10: the lower index -> 1; t8 -> 0; t9 -> 2.
    assert sources_of([0.5, 0.3, 0.2], 0, 10) == "0102010102"
    assert sources_of([0.5, 0.3, 0.2], 0, 40) == "0102010102010201010201020101020102010102"


def test_deadline_ties_go_to_the_lower_source_index():
    # 6/7/3 of 16: the first sequences of sources 0 and 1 are both due by slot 3 (ceil(16/6) = ceil(16/7));
    # source 0 goes first although 16/7 < 16/6.
    assert sources_of([6.0, 7.0, 3.0], 0, 40) == "0110210102101012011021010210101201102101"


def test_equal_weights_round_robin_in_index_order():
    assert sources_of([1.0, 1.0, 1.0], 0, 12) == "012012012012"
    assert sources_of([0.25, 0.25, 0.5], 0, 12) == "201220122012"


def test_large_weight_set_golden_sequence_and_counts():
    weights = [0.3, 0.2, 0.15, 0.1, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01]
    assert sources_of(weights, 0, 100) == (
        "0120340123014051026301204102730140510283012041062301405102730120410263014051028301204102530140910267"
    )
    assert counts_at(weights, 1000) == [300, 200, 150, 100, 100, 50, 40, 30, 20, 10]


def test_a_slice_starting_past_zero_is_that_part_of_the_stream():
    full = schedule([0.5, 0.3, 0.2], 0, 40)
    part = schedule([0.5, 0.3, 0.2], 7, 23)
    assert len(part) == 16
    assert np.array_equal(part, full[7:23])
    assert sources_of([0.5, 0.3, 0.2], 7, 12) == "10201"
    assert len(schedule([0.5, 0.3, 0.2], 5, 5)) == 0


def test_counts_after_an_odd_prefix():
    assert counts_at([0.5, 0.3, 0.2], 1001) == [501, 300, 200]
    assert counts_at([0.5, 0.3, 0.2], 0) == [0, 0, 0]


@pytest.mark.parametrize("weights", [[0.5, 0.0, 0.5], [0.0], [1.0, -0.5], [float("nan"), 1.0]])
def test_zero_negative_and_nan_weights_are_rejected(weights):
    with pytest.raises(ValueError, match="weights must be > 0"):
        integer_weights(weights)
    with pytest.raises(ValueError, match="weights must be > 0"):
        schedule(weights, 0, 10)


def test_no_source_is_rejected():
    with pytest.raises(ValueError, match="at least one source"):
        integer_weights([])


def test_integer_weights_are_proportional_at_the_fixed_resolution():
    assert WEIGHT_RESOLUTION == 2**40
    # Unnormalised weights are divided by their sum (2 + 1 + 1), not multiplied by it.
    assert integer_weights([2.0, 1.0, 1.0]) == [2**39, 2**38, 2**38]
    # A weight too small to show at 2**-40 still gets the minimum of exactly 1.
    assert integer_weights([1.0, 1e-15]) == [2**40, 1]


def test_a_cursor_walks_the_same_stream_in_pieces():
    cursor = ScheduleCursor([0.5, 0.3, 0.2])
    assert "".join(map(str, cursor.take(3))) == "010"
    cursor.skip(4)
    assert cursor.position == 7 and cursor.counts == [4, 2, 1]
    assert "".join(map(str, cursor.take(5))) == "10201"
    small_blocks = ScheduleCursor([0.5, 0.3, 0.2])
    small_blocks.skip(12, block=5)
    assert small_blocks.counts == cursor.counts and small_blocks.position == 12


def test_source_positions_continue_each_source_from_its_count_before():
    positions = source_positions(np.array([0, 1, 0, 2, 0, 1]), [10, 20, 30])
    assert positions.tolist() == [10, 20, 11, 30, 12, 21]


# --- resume from stored counts (ScheduleCursor.at_counts): the cursor after n sequences from its counts alone


def picks(cursor: ScheduleCursor, n: int) -> str:
    return "".join(str(int(j)) for j in cursor.take(n))


@pytest.mark.parametrize(
    ("counts", "rest"),
    [
        # the 50/30/20 stream "0102010102 0102010102..." (test_50_30_20_by_hand) after 0, 3, 7 and 10 sequences
        ([0, 0, 0], "0102010102"),
        ([2, 1, 0], "2010102010"),
        ([4, 2, 1], "1020102010"),
        ([5, 3, 2], "0102010102"),
    ],
)
def test_a_cursor_rebuilt_from_counts_continues_the_stream_exactly(counts, rest):
    cursor = ScheduleCursor.at_counts([0.5, 0.3, 0.2], counts)
    assert cursor.position == sum(counts) and cursor.counts == counts
    assert picks(cursor, 10) == rest


def test_a_cursor_rebuilt_mid_tie_keeps_the_tie_break():
    # 6/7/3 of 16 (test_deadline_ties_go_to_the_lower_source_index): after "0110" the counts are (2, 2, 0)
    assert picks(ScheduleCursor.at_counts([6.0, 7.0, 3.0], [2, 2, 0]), 12) == "210102101012"


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([1, 1], "counts [1, 1] do not fit 3 sources"),
        ([1, 1, 1, 1], "counts [1, 1, 1, 1] do not fit 3 sources"),
        ([2, -1, 0], "counts [2, -1, 0] do not fit 3 sources"),
        # 10 sequences at 50/30/20 hold 5/3/2 exactly: one more or less of a source is not a prefix
        ([6, 2, 2], "counts [6, 2, 2] are not a state of this schedule (more than one sequence off the weights)"),
        ([4, 3, 3], "counts [4, 3, 3] are not a state of this schedule (more than one sequence off the weights)"),
        # 3 sequences: source 0 may have 1 or 2 (1.5 +- 1 rounded to the bounds floor/ceil), not 3 or 0
        ([3, 0, 0], "counts [3, 0, 0] are not a state of this schedule (more than one sequence off the weights)"),
        ([0, 2, 1], "counts [0, 2, 1] are not a state of this schedule (more than one sequence off the weights)"),
    ],
)
def test_counts_that_no_prefix_has_are_refused(counts, message):
    with pytest.raises(ValueError) as err:
        ScheduleCursor.at_counts([0.5, 0.3, 0.2], counts)
    assert str(err.value) == message


def test_counts_on_both_bounds_are_accepted():
    # 3 sequences at 50/30/20: floor/ceil of (1.5, 0.9, 0.6) are (1..2, 0..1, 0..1)
    for counts in ([2, 1, 0], [1, 1, 1], [2, 0, 1]):
        assert ScheduleCursor.at_counts([0.5, 0.3, 0.2], counts).position == 3
