"""Lanes: where a source's n-th sequence lies, laid out so that ranks can own contiguous regions.

Pure functions of (number of lanes K, sequences per epoch S, epoch position q); no I/O, no world size.

An epoch of a source is its shards in the epoch's seeded permutation (`SourceOrder.shard_order`), each
shard's whole sequences in file order: an array E of S sequences. E is cut into K contiguous *lanes*
(lane l holds `lane_lengths[l]` sequences, the lengths differ by at most one) and the source's stream
visits the lanes in turn: epoch position q reads lane `LANE_OF_SLOT[q % K]`, item q // K of that lane.
So the stream reads K far-apart places of the epoch at once, each lane front to back (ranged reads of
contiguous bytes), and a fresh shard permutation every epoch.

The visiting order `lane_cycle(K)` is a mixed-radix digit reversal (van der Corput): any run of
consecutive positions spreads over the lanes almost evenly, so the c sequences a step takes from a
source fall about c/W into each contiguous block of K/W lanes, for every W at once. The assignment of
a step's sequences to ranks (assign.py) sorts them by their place in E and cuts the sorted list, so a
rank's sequences come from its own block of lanes, i.e. a contiguous 1/W of every epoch.
"""

from __future__ import annotations

import functools

import numpy as np

# 24 = 2*2*2*3 divides the world sizes 1, 2, 3, 4, 6, 8, 12 and 24 (equal lane blocks per rank). It is
# part of the stream's definition (stored in the loader state): a resume must use the same value.
DEFAULT_LANES = 24


def prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


@functools.lru_cache(maxsize=16)
def lane_cycle(lanes: int) -> np.ndarray:
    """Slot -> lane for one cycle of K slots: the digits of the slot in the mixed radix of K's prime
    factors, reversed (slot 0, 1, 2, ... visits lanes 0, K/2, K/4, 3K/4, ... for K a power of two)."""
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    radices = prime_factors(lanes)
    out = np.empty(lanes, dtype=np.int64)
    for slot in range(lanes):
        rest, lane = slot, 0
        weight = lanes
        for r in radices:  # least significant digit of the slot becomes the most significant of the lane
            weight //= r
            lane += (rest % r) * weight
            rest //= r
        out[slot] = lane
    return out


@functools.lru_cache(maxsize=64)
def lane_lengths(sequences: int, lanes: int) -> np.ndarray:
    """Sequences in each lane of an epoch of S sequences: lane l gets the slots q < S with
    cycle[q % K] == l, i.e. ceil((S - slot) / K) for its slot."""
    slot_of_lane = np.argsort(lane_cycle(lanes))
    return np.maximum(0, -(-(sequences - slot_of_lane) // lanes))


@functools.lru_cache(maxsize=64)
def lane_starts(sequences: int, lanes: int) -> np.ndarray:
    """Index in E of each lane's first sequence (lanes laid out in lane order), plus S at the end."""
    return np.concatenate([[0], np.cumsum(lane_lengths(sequences, lanes))]).astype(np.int64)


def place_in_epoch(q: np.ndarray, sequences: int, lanes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For epoch positions q (0 <= q < S): (index in E, lane, item within the lane)."""
    q = np.asarray(q, dtype=np.int64)
    lane = lane_cycle(lanes)[q % lanes]
    item = q // lanes
    return lane_starts(sequences, lanes)[lane] + item, lane, item


def lane_owner(lane: np.ndarray | int, lanes: int, world_size: int) -> np.ndarray:
    """The rank whose block holds `lane`: contiguous blocks of K/W lanes (sizes differ by one when W
    does not divide K; beyond W = K several ranks share a lane and read it by rows)."""
    return (np.asarray(lane, dtype=np.int64) * world_size + world_size // 2) // lanes
