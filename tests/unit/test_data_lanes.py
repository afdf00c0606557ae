"""The pure parts of shard locality: lanes (where a source's sequences lie) and the per-rank split of a step."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from trainkit.data.assign import assign_step
from trainkit.data.lanes import lane_cycle, lane_lengths, lane_owner, place_in_epoch
from trainkit.data.schedule import ScheduleCursor, schedule


@given(st.integers(1, 96))
def test_the_lane_cycle_visits_every_lane_once(lanes):
    assert sorted(lane_cycle(lanes).tolist()) == list(range(lanes))


def test_the_lane_cycle_of_24_is_the_mixed_radix_reversal():
    assert lane_cycle(24)[:9].tolist() == [0, 12, 6, 18, 3, 15, 9, 21, 1]


@given(st.integers(0, 5000), st.sampled_from([1, 2, 7, 24, 64]))
def test_an_epoch_maps_one_to_one_onto_its_lanes(sequences, lanes):
    lengths = lane_lengths(sequences, lanes)
    assert lengths.sum() == sequences and (lengths.max() - lengths.min() <= 1 if sequences else True)
    places, lane, item = place_in_epoch(np.arange(sequences), sequences, lanes)
    assert sorted(places.tolist()) == list(range(sequences))  # every sequence of the epoch exactly once
    assert (item < lengths[lane]).all()


@settings(max_examples=50)
@given(
    st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4),
    st.sampled_from([24, 48, 120]),
    st.sampled_from([1, 2, 3, 8]),
    st.integers(0, 50),
)
def test_each_rank_gets_its_share_mostly_from_its_own_lanes(weights, g, world, step):
    sources = schedule(weights, step * g, (step + 1) * g)
    cursor = ScheduleCursor(weights)
    cursor.skip(step * g)
    positions = np.empty(g, np.int64)
    for j, before in enumerate(cursor.counts):
        mask = sources == j
        positions[mask] = before + np.arange(mask.sum())
    sizes = 10_000
    places, lanes, _ = place_in_epoch(positions % sizes, sizes, 24)
    picked = assign_step(sources, places, positions // sizes, world, [sizes] * len(weights))
    assert sorted(np.concatenate(picked).tolist()) == list(range(g))
    # Micro-batches are the same sequences whatever W is: the ranks' parts, in rank order, are W = 1's.
    assert (
        np.concatenate(picked).tolist()
        == assign_step(sources, places, positions // sizes, 1, [sizes] * len(weights))[0].tolist()
    )
    assert [len(p) for p in picked] == [g // world] * world
    own = sum(int((lane_owner(lanes[p], 24, world) == r).sum()) for r, p in enumerate(picked))
    # Off-block rows: a few per block edge and source, from rounding and the spread of the cycle.
    assert g - own <= 3 * (world - 1) * len(weights)


def test_at_counts_refuses_counts_that_no_prefix_has():
    import pytest

    with pytest.raises(ValueError, match="not a state of this schedule"):
        ScheduleCursor.at_counts([0.5, 0.5], [10, 0])
