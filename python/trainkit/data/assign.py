"""Which of a step's G sequences each rank trains on: exact counts, and each rank near its own lanes.

Pure functions, no I/O. The step's G sequences (which source, which place in the source's epoch) are
fixed by the schedule and the lanes, whatever the world size; only this split depends on W.

`assign_step` sorts the step's sequences by their relative place in their source's epoch (lane-major,
see lanes.py) and cuts that W-independent order into W equal parts, so the low ranks get the low lanes:
a rank's sequences come from its own contiguous block of K/W lanes of every source, except a few at the
edge of the block (read as single-row ranges; see docs/data.md for the bound). The step's per-source
counts are the schedule's whatever the split; each rank gets about c_j / W of source j.
"""

from __future__ import annotations

import numpy as np


def assign_step(
    sources: np.ndarray, places: np.ndarray, epochs: np.ndarray, world_size: int, epoch_sizes: list[int] | np.ndarray
) -> list[np.ndarray]:
    """For each rank, the indices into the step (0..G-1) of the sequences it takes, in the order its
    micro-batches hold them.

    The step's G sequences are sorted by where they lie in their source's epoch, as a fraction
    place / S_j (ties: epoch, source, slot); that order does not depend on W, and rank r takes its r-th
    G/W of it. So every rank gets exactly G/W sequences, micro-batch i of the step holds the same
    sequences whatever W is (dropout masks, drawn per micro-batch, too), and rank r's sequences lie in
    the r-th 1/W of every source's epoch, i.e. in its own block of lanes, but for the few the cut
    between ranks moves across (rounding of the per-source counts and the spread of the lane cycle)."""
    sources = np.asarray(sources)
    g = len(sources)
    if g % world_size:
        raise ValueError(f"a step of {g} sequences does not split over {world_size} ranks")
    sizes = np.asarray(epoch_sizes, dtype=np.float64)
    fraction = np.asarray(places, dtype=np.float64) / sizes[sources]
    order = np.lexsort((np.arange(g), sources, epochs, fraction))
    share = g // world_size
    return [order[r * share : (r + 1) * share] for r in range(world_size)]
