"""Property tests of the mixing schedule, the rank partition and the per-source order (pure, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainkit.data.order import SourceExhausted, SourceOrder
from trainkit.data.partition import BatchGeometry, PartitionError, micro_batches, rank_slice
from trainkit.data.schedule import ScheduleCursor, counts_at, integer_weights, schedule, source_positions

weights_strategy = st.lists(
    st.one_of(st.floats(0.01, 100.0, allow_nan=False), st.sampled_from([0.01, 0.5, 0.3, 0.2, 1.0, 1 / 3])),
    min_size=1,
    max_size=8,
)


def prefix_errors(sources: np.ndarray, weights: list[float]) -> np.ndarray:
    """For each source, the largest |count in prefix n - n * w| over all prefixes n."""
    a = np.asarray(integer_weights(weights), dtype=np.float64)
    w = a / a.sum()
    n = np.arange(1, len(sources) + 1)
    return np.array([np.abs(np.cumsum(sources == j) - n * w[j]).max() for j in range(len(weights))])


@settings(max_examples=120, deadline=None)
@given(weights=weights_strategy, length=st.integers(1, 4000))
def test_every_prefix_is_within_one_sequence_of_the_weights(weights, length):
    sources = schedule(weights, 0, length)
    assert prefix_errors(sources, weights).max() < 1.0


def test_weight_of_one_percent_gets_one_sequence_in_a_hundred():
    sources = schedule([0.01, 0.99], 0, 100_000)
    assert np.count_nonzero(sources == 0) == 1000
    # Never early or late by a whole sequence: the j-th small-source sequence sits in [100(j-1), 100j).
    positions = np.flatnonzero(sources == 0)
    assert np.all(positions // 100 == np.arange(1000))


def test_float_weights_are_honoured_within_one_sequence_at_scale():
    weights = [0.5, 0.3, 0.2]
    counts = counts_at(weights, 1_000_000)
    assert counts == [500_000, 300_000, 200_000]


@settings(max_examples=60, deadline=None)
@given(weights=weights_strategy, k=st.integers(0, 3000), more=st.integers(1, 500))
def test_resume_at_k_equals_the_uninterrupted_stream(weights, k, more):
    uninterrupted = schedule(weights, 0, k + more)
    resumed = ScheduleCursor(weights)
    resumed.skip(k)
    assert resumed.counts == [int(np.count_nonzero(uninterrupted[:k] == j)) for j in range(len(weights))]
    assert np.array_equal(resumed.take(more), uninterrupted[k:])


@settings(max_examples=60, deadline=None)
@given(
    weights=weights_strategy,
    micro=st.integers(1, 4),
    ranks_before=st.integers(1, 6),
    ranks_after=st.integers(1, 6),
    accum=st.integers(1, 3),
    steps_before=st.integers(0, 8),
    steps_after=st.integers(1, 8),
)
def test_changing_world_size_at_resume_loses_and_repeats_nothing(
    weights, micro, ranks_before, ranks_after, accum, steps_before, steps_after
):
    # One global batch size that both worker counts divide (the spec requires that of any run).
    global_batch = micro * accum * ranks_before * ranks_after
    before, after = BatchGeometry(global_batch, micro, ranks_before), BatchGeometry(global_batch, micro, ranks_after)
    read: list[int] = []
    for step in range(steps_before):
        for r in range(ranks_before):
            for a, b in micro_batches(step, r, before):
                read.extend(range(a, b))
    for step in range(steps_before, steps_before + steps_after):
        for r in range(ranks_after):
            for a, b in micro_batches(step, r, after):
                read.extend(range(a, b))
    total = (steps_before + steps_after) * global_batch
    assert sorted(read) == list(range(total))  # every sequence exactly once: nothing lost, nothing repeated
    # ... and the source of every sequence is the uninterrupted stream's.
    stream = schedule(weights, 0, total)
    resumed = ScheduleCursor(weights)
    resumed.skip(steps_before * global_batch)
    assert np.array_equal(resumed.take(steps_after * global_batch), stream[steps_before * global_batch :])


@settings(max_examples=80, deadline=None)
@given(micro=st.integers(1, 8), world=st.integers(1, 16), accum=st.integers(1, 8), step=st.integers(0, 10_000))
def test_every_rank_gets_the_same_number_of_equal_micro_batches(micro, world, accum, step):
    g = BatchGeometry(micro * world * accum, micro, world)
    per_rank = [micro_batches(step, r, g) for r in range(world)]
    assert {len(mb) for mb in per_rank} == {accum}
    assert all(b - a == micro for mb in per_rank for a, b in mb)
    slices = [rank_slice(step, r, g) for r in range(world)]
    assert slices[0][0] == step * g.global_batch and slices[-1][1] == (step + 1) * g.global_batch
    assert all(slices[r][1] == slices[r + 1][0] for r in range(world - 1))


def test_uneven_geometry_is_refused_with_the_numbers():
    with pytest.raises(PartitionError, match="120 is not divisible by micro-batch 24 x world size 4"):
        BatchGeometry(120, 24, 4)
    with pytest.raises(PartitionError, match="rank 4 is outside world size 4"):
        rank_slice(0, 4, BatchGeometry(16, 2, 4))


def test_source_positions_count_within_each_source():
    sources = np.array([0, 1, 0, 2, 0, 1])
    assert source_positions(sources, [10, 20, 30]).tolist() == [10, 20, 11, 30, 12, 21]


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8).filter(lambda s: sum(s) > 0),
    seed=st.integers(0, 2**31 - 1),
)
def test_each_epoch_reads_every_sequence_of_a_source_exactly_once(sizes, seed):
    order = SourceOrder("web", seed, tuple(sizes), repeat=True)
    total = sum(sizes)
    shards, local = order.locate(np.arange(2 * total))
    for epoch in range(2):
        got = sorted(
            zip(
                shards[epoch * total : (epoch + 1) * total].tolist(),
                local[epoch * total : (epoch + 1) * total].tolist(),
            )
        )
        assert got == sorted((s, i) for s, n in enumerate(sizes) for i in range(n))
    if total > 3:
        # A repeat is a fresh permutation, not a replay of the first epoch.
        assert (shards[:total].tolist(), local[:total].tolist()) != (shards[total:].tolist(), local[total:].tolist())


def test_order_depends_on_seed_and_is_reproducible():
    a = SourceOrder("web", 1, (50, 50, 50), repeat=False)
    b = SourceOrder("web", 1, (50, 50, 50), repeat=False)
    c = SourceOrder("web", 2, (50, 50, 50), repeat=False)
    pos = np.arange(150)
    assert all(np.array_equal(x, y) for x, y in zip(a.locate(pos), b.locate(pos)))
    assert not all(np.array_equal(x, y) for x, y in zip(a.locate(pos), c.locate(pos)))


def test_fail_mode_refuses_to_read_past_the_shards():
    order = SourceOrder("edu", 0, (3, 4), repeat=False)
    order.locate(np.arange(7))
    with pytest.raises(SourceExhausted, match="source 'edu' needs 8 sequences but its shards hold 7"):
        order.locate(np.arange(8))
