"""Which of a step's G sequences each rank trains on: exact counts, and each rank near its own lanes.

Pure functions, no I/O. The step's G sequences (which source, which place in the source's epoch) are
fixed by the schedule and the lanes, whatever the world size; only this split depends on W.

1. Quotas (`rank_quotas`): rank r gets x[r, j] sequences of source j, with every row summing to G/W
   and every column to c_j (the step's scheduled count), the cumulative quotas within one sequence of
   r c_j / W.
2. Which ones: sort the step's sequences of source j by their place in the epoch (lane-major, see
   lanes.py); rank r takes the x[r, j] sequences after the first x[0, j] + ... + x[r-1, j]. The low
   ranks get the low lanes: a rank's sequences come from its own contiguous block of K/W lanes, except
   a sequence or two per source at the edge of the block when rounding or the spread of the lanes
   moves the cut (those few are read as single-row ranges; see docs/data.md for the bound).
"""

from __future__ import annotations

import numpy as np


def rank_quotas(counts: list[int] | np.ndarray, world_size: int) -> np.ndarray:
    """x[r, j]: sequences of source j rank r takes; rows sum to G/W and columns to c_j.

    The cumulative quota X[r, j] = x[0, j] + ... + x[r-1, j] is r c_j / W rounded by largest remainder
    among the sources (so the X[r, :] sum to exactly r G / W), hence within one sequence of r c_j / W:
    the cut between ranks r-1 and r in source j's sorted list sits within one sequence of the ideal.
    Where that rounding is not monotone in r (only possible when c_j < W), the round-robin deal of the
    step's sequences listed source by source is used instead (also exact, a little less even)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total % world_size:
        raise ValueError(f"a step of {total} sequences does not split over {world_size} ranks")
    ranks = np.arange(world_size + 1, dtype=np.int64)[:, None]
    scaled = ranks * counts[None, :]  # W * target, exact integers
    cumulative, remainder = np.divmod(scaled, world_size)
    short = ranks[:, 0] * (total // world_size) - cumulative.sum(axis=1)
    # Largest remainder first, ties to the lower source index: a stable order, the same for every r.
    by_remainder = np.argsort(-remainder, axis=1, kind="stable")
    bump = np.zeros_like(cumulative)
    for r in range(world_size + 1):
        bump[r, by_remainder[r, : short[r]]] = 1
    quotas = np.diff(cumulative + bump, axis=0)
    if (quotas >= 0).all():
        return quotas
    before = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rr = np.arange(world_size, dtype=np.int64)[:, None]

    def below(n: np.ndarray) -> np.ndarray:  # #{k < n: k % W == r} = ceil((n - r) / W)
        return np.maximum(0, -(-(n[None, :] - rr) // world_size))

    return below(before + counts) - below(before)


def assign_step(sources: np.ndarray, places: np.ndarray, epochs: np.ndarray, world_size: int) -> list[np.ndarray]:
    """For each rank, the indices into the step (0..G-1) of the sequences it takes, ascending.

    `sources[i]`, `places[i]`, `epochs[i]`: source id, index in the source's epoch array E, and epoch of
    the step's i-th sequence. Sorting by place before epoch keeps a sequence at the front of the next
    epoch with the low ranks, whose region it is."""
    sources = np.asarray(sources)
    n_sources = int(sources.max()) + 1 if len(sources) else 0
    counts = np.bincount(sources, minlength=n_sources)
    quotas = rank_quotas(counts, world_size)
    picked: list[list[np.ndarray]] = [[] for _ in range(world_size)]
    for j in range(n_sources):
        rows = np.flatnonzero(sources == j)
        order = rows[np.lexsort((rows, epochs[rows], places[rows]))]
        cuts = np.concatenate([[0], np.cumsum(quotas[:, j])])
        for r in range(world_size):
            picked[r].append(order[cuts[r]:cuts[r + 1]])
    return [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in picked]
