"""The rank partition, pinned: literal slices, micro-batches and steps, and every rejected geometry."""

from __future__ import annotations

import pytest

from trainkit.data.partition import BatchGeometry, PartitionError, micro_batches, rank_slice, step_of


def test_geometry_of_8_sequences_on_2_ranks_in_micro_batches_of_2():
    g = BatchGeometry(global_batch=8, micro_batch=2, world_size=2)
    assert (g.per_rank, g.accumulation) == (4, 2)
    assert BatchGeometry(global_batch=12, micro_batch=1, world_size=3).per_rank == 4
    assert BatchGeometry(global_batch=12, micro_batch=2, world_size=3).accumulation == 2


def test_literal_rank_slices_and_micro_batches():
    g = BatchGeometry(global_batch=8, micro_batch=2, world_size=2)
    assert rank_slice(0, 0, g) == (0, 4)
    assert rank_slice(0, 1, g) == (4, 8)
    assert rank_slice(3, 1, g) == (28, 32)
    assert micro_batches(3, 0, g) == [(24, 26), (26, 28)]
    assert micro_batches(3, 1, g) == [(28, 30), (30, 32)]
    g3 = BatchGeometry(global_batch=12, micro_batch=2, world_size=2)
    assert micro_batches(1, 1, g3) == [(18, 20), (20, 22), (22, 24)]


@pytest.mark.parametrize("rank", [-1, 2, 7])
def test_ranks_outside_the_world_are_rejected(rank):
    with pytest.raises(PartitionError, match=f"rank {rank} is outside world size 2"):
        rank_slice(0, rank, BatchGeometry(8, 2, 2))


def test_a_negative_step_is_rejected():
    with pytest.raises(PartitionError, match="step -1"):
        rank_slice(-1, 0, BatchGeometry(8, 2, 2))


@pytest.mark.parametrize("geometry", [(0, 1, 1), (8, 0, 1), (8, 1, 0), (-8, 1, 1), (8, -2, 1), (8, 2, -1)])
def test_zero_or_negative_sizes_are_rejected(geometry):
    with pytest.raises(PartitionError, match="batch geometry must be positive"):
        BatchGeometry(*geometry)


def test_the_smallest_geometry_is_accepted():
    g = BatchGeometry(1, 1, 1)
    assert (g.per_rank, g.accumulation) == (1, 1)
    assert micro_batches(5, 0, g) == [(5, 6)]


@pytest.mark.parametrize("geometry", [(8, 3, 1), (8, 2, 3), (6, 2, 2)])
def test_a_global_batch_that_does_not_divide_is_rejected(geometry):
    with pytest.raises(PartitionError, match="is not divisible by micro-batch"):
        BatchGeometry(*geometry)


def test_step_of_a_whole_number_of_global_batches():
    g = BatchGeometry(8, 2, 2)
    assert step_of(0, g) == 0
    assert step_of(24, g) == 3
    assert isinstance(step_of(24, g), int)


@pytest.mark.parametrize("consumed", [1, 12, 25])
def test_step_of_a_partial_batch_is_rejected(consumed):
    with pytest.raises(
        PartitionError, match=f"sequences_consumed {consumed} is not a whole number of global batches of 8"
    ):
        step_of(consumed, BatchGeometry(8, 2, 2))


def test_step_of_a_negative_count_is_rejected():
    with pytest.raises(PartitionError, match="sequences_consumed -8"):
        step_of(-8, BatchGeometry(8, 2, 2))
