"""The per-source read order, pinned: the exact permutations a (name, seed, shard sizes) gives, the
positions they map to, the prefetcher's look-ahead and the empty-source rules. A change here would
silently change which sequences a run reads (and break resuming a run started by an older version)."""

from __future__ import annotations

import numpy as np
import pytest

from trainkit.data.order import SourceExhausted, SourceOrder, _stable_key

# Four shards of 3, 0, 4 and 2 whole sequences (an empty shard included).
SIZES = (3, 0, 4, 2)


def test_the_name_key_is_the_first_8_bytes_of_its_sha256_little_endian():
    assert _stable_key("web") == 13349284935976312395


def test_golden_permutations():
    order = SourceOrder("web", 7, SIZES, repeat=True)
    assert order.sequences == 9
    assert order.shard_order(0).tolist() == [2, 1, 0, 3]
    assert order.shard_order(1).tolist() == [3, 0, 2, 1]  # a fresh permutation each epoch
    assert order.within_shard(0, 0).tolist() == [1, 0, 2]
    assert order.within_shard(0, 2).tolist() == [1, 3, 0, 2]
    assert order.within_shard(1, 2).tolist() == [2, 3, 0, 1]


def test_golden_locations_over_two_epochs():
    order = SourceOrder("web", 7, SIZES, repeat=True)
    shards, local = order.locate(np.arange(20))
    # Epoch 0 reads shard 2 (4 sequences), the empty shard 1, shard 0 (3), shard 3 (2); epoch 1: 3, 0, 2.
    assert shards.tolist() == [2, 2, 2, 2, 0, 0, 0, 3, 3, 3, 3, 0, 0, 0, 2, 2, 2, 2, 3, 3]
    assert local.tolist() == [1, 3, 0, 2, 1, 0, 2, 1, 0, 0, 1, 0, 2, 1, 2, 3, 0, 1, 0, 1]
    # Out of order and repeated positions give the same answers.
    s, l = order.locate(np.array([13, 0, 13]))
    assert s.tolist() == [0, 2, 0] and l.tolist() == [1, 1, 1]


def test_no_positions_locate_nothing():
    shards, local = SourceOrder("web", 7, SIZES, repeat=False).locate(np.array([], dtype=np.int64))
    assert shards.dtype == np.int64 and local.dtype == np.int64
    assert shards.shape == (0,) and local.shape == (0,)
    # Even a source with no sequence at all may be asked for none.
    assert SourceOrder("empty", 0, (0, 0), repeat=True).locate(np.array([], dtype=np.int64))[0].shape == (0,)


def test_a_source_without_sequences_fails_even_when_repeating():
    empty = SourceOrder("empty", 0, (0, 0), repeat=True)
    with pytest.raises(SourceExhausted, match="source 'empty' has no complete sequence in its shards"):
        empty.locate(np.array([0]))
    empty.check_available(0)  # needing nothing is fine
    SourceOrder("one", 0, (1,), repeat=False).check_available(1)


def test_fail_mode_boundary():
    order = SourceOrder("web", 7, SIZES, repeat=False)
    order.check_available(9)
    with pytest.raises(SourceExhausted, match="source 'web' needs 10 sequences but its shards hold 9"):
        order.check_available(10)


def test_upcoming_shards_golden():
    order = SourceOrder("web", 7, SIZES, repeat=True)
    assert order.upcoming_shards(0, 1) == [2]
    assert order.upcoming_shards(0, 3) == [2, 0, 3]  # the empty shard 1 is never fetched
    assert order.upcoming_shards(0, 10) == [2, 0, 3]  # stops when the next epoch comes back to a listed shard
    assert order.upcoming_shards(5, 2) == [0, 3]
    assert order.upcoming_shards(8, 5) == [3]  # epoch 1 starts with shard 3 again
    assert order.upcoming_shards(9, 2) == [3, 0]  # position 9 is epoch 1's first
    assert order.upcoming_shards(0, 0) == []


def test_upcoming_shards_without_repeat_stop_at_the_end():
    order = SourceOrder("web", 7, SIZES, repeat=False)
    assert order.upcoming_shards(0, 10) == [2, 0, 3]
    assert order.upcoming_shards(7, 10) == [3]
    wide = SourceOrder("wide", 7, (2, 2, 2, 2), repeat=True)
    assert (wide.shard_order(0).tolist(), wide.shard_order(1).tolist()) == ([1, 3, 2, 0], [1, 3, 0, 2])
    # From epoch 0's last shard (0) into epoch 1 (1, 3, 0, ...): stops before shard 0 comes round again.
    assert wide.upcoming_shards(6, 4) == [0, 1, 3]
    assert SourceOrder("empty", 0, (0, 0), repeat=True).upcoming_shards(0, 3) == []
