"""Which source each sequence of the global stream comes from: an exact, deterministic schedule.

Pure functions, no I/O. The schedule is proportionate-fair (Pfair) earliest-deadline-first over
integer weights a_j (sum A): the k-th sequence of source j (k = 1, 2, ...) is released at slot
floor((k-1) A / a_j) and due by slot ceil(k A / a_j); each slot goes to the released sequence with the
earliest deadline (ties: lower source index). With one slot per time step and weights summing to one,
EDF meets every deadline, so after n sequences every source j has taken

    floor(n w_j) <= count_j(n) <= ceil(n w_j)

sequences: every prefix is within one sequence of the weights, for any weights (a source of weight
0.01 gets exactly one sequence in every hundred, to within one).

The whole state after n sequences is the per-source counts, which are a function of n alone, so a
stream resumes at n by recomputing them (`counts_at`, ~1 s per million sequences), or in O(sources)
from counts stored with the position (`ScheduleCursor.at_counts`).
"""

from __future__ import annotations

import heapq
from fractions import Fraction

import numpy as np

# Float weights are turned into integers with this resolution; the realised proportions differ from
# the floats by < 1e-12 relative, i.e. by < 0.001 sequences over a billion sequences.
WEIGHT_RESOLUTION = 1 << 40


def integer_weights(weights: list[float]) -> list[int]:
    """Positive integer weights proportional to `weights` (each >= 1)."""
    if not weights:
        raise ValueError("a mixture needs at least one source")
    if any(not (w > 0) for w in weights):
        raise ValueError(f"weights must be > 0, got {weights}")
    total = sum(Fraction(w) for w in weights)
    return [max(1, round(Fraction(w) / total * WEIGHT_RESOLUTION)) for w in weights]


class ScheduleCursor:
    """Walks the schedule forward; `take(n)` returns the source ids of the next n sequences."""

    def __init__(self, weights: list[float]):
        self.int_weights = integer_weights(weights)
        self.total_weight = sum(self.int_weights)
        self.position = 0
        self.counts = [0] * len(self.int_weights)
        self._ready: list[tuple[int, int]] = []  # (deadline, source)
        self._waiting: list[tuple[int, int]] = []  # (release, source)
        for j in range(len(self.int_weights)):
            self._queue_next(j)

    @classmethod
    def at_counts(cls, weights: list[float], counts: list[int]) -> "ScheduleCursor":
        """The cursor after sum(counts) sequences, built from the per-source counts in O(sources).

        Exact: after every `take` each source has one entry, keyed by its release (waiting) or its
        deadline (ready), both functions of its count alone, and `take` moves released entries to the
        ready heap before it picks. So (counts) is the whole state. Counts that no prefix of the
        schedule has are refused: each must lie within one sequence of n w_j (see the module
        docstring), and the cursor's next picks are checked against that bound as well."""
        cursor = cls(weights)
        counts = [int(c) for c in counts]
        if len(counts) != len(cursor.int_weights) or min(counts, default=0) < 0:
            raise ValueError(f"counts {counts} do not fit {len(cursor.int_weights)} sources")
        n = sum(counts)
        for c, a in zip(counts, cursor.int_weights):
            if not (n * a) // cursor.total_weight <= c <= -(-(n * a) // cursor.total_weight):
                raise ValueError(
                    f"counts {counts} are not a state of this schedule (more than one sequence off the weights)"
                )
        cursor.position, cursor.counts = n, counts
        cursor._ready, cursor._waiting = [], []
        for j in range(len(counts)):
            cursor._queue_next(j)
        return cursor

    def _release(self, j: int) -> int:
        return (self.counts[j] * self.total_weight) // self.int_weights[j]

    def _deadline(self, j: int) -> int:
        return -((-(self.counts[j] + 1) * self.total_weight) // self.int_weights[j])

    def _queue_next(self, j: int) -> None:
        release = self._release(j)
        if release <= self.position:
            heapq.heappush(self._ready, (self._deadline(j), j))
        else:
            heapq.heappush(self._waiting, (release, j))

    def take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int16)
        # The EDF step with everything in locals (this loop is the schedule's whole cost).
        ready, waiting, counts = self._ready, self._waiting, self.counts
        a, total = self.int_weights, self.total_weight
        push, pop = heapq.heappush, heapq.heappop
        t = self.position
        for i in range(n):
            while waiting and waiting[0][0] <= t:
                j = pop(waiting)[1]
                push(ready, (-((-(counts[j] + 1) * total) // a[j]), j))
            j = pop(ready)[1]  # never empty: see the module docstring
            out[i] = j
            c = counts[j] = counts[j] + 1
            t += 1
            release = (c * total) // a[j]
            if release <= t:
                push(ready, (-((-(c + 1) * total) // a[j]), j))
            else:
                push(waiting, (release, j))
        self.position = t
        return out

    def skip(self, n: int, block: int = 1 << 16) -> None:
        while n > 0:
            step = min(n, block)
            self.take(step)
            n -= step


def schedule(weights: list[float], start: int, stop: int) -> np.ndarray:
    """Source ids of global sequences [start, stop)."""
    cursor = ScheduleCursor(weights)
    cursor.skip(start)
    return cursor.take(stop - start)


def counts_at(weights: list[float], n: int) -> list[int]:
    """Sequences each source has given after the first n sequences of the stream."""
    cursor = ScheduleCursor(weights)
    cursor.skip(n)
    return list(cursor.counts)


def source_positions(sources: np.ndarray, counts_before: list[int]) -> np.ndarray:
    """For each entry of `sources` (a slice of the schedule), its index within its own source's order,
    given how many sequences each source had given before the slice."""
    positions = np.empty(len(sources), dtype=np.int64)
    for j, before in enumerate(counts_before):
        mask = sources == j
        positions[mask] = before + np.arange(int(mask.sum()), dtype=np.int64)
    return positions
