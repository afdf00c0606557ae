"""The order in which one source's sequences are read: pure functions of (seed, source, shard sizes).

A source is cut into sequences of seqLength+1 tokens inside each shard (a shard's tail shorter than
one sequence is skipped). Epoch e reads every sequence once: the shards in a seeded permutation, and
inside each shard its sequences in a seeded permutation. Whole shards are read one after another, so
streaming from object storage is sequential; the seed still decorrelates documents within a shard.
Epoch e+1 (`whenExhausted: repeat`) uses fresh permutations. Position p of a source maps to one
(shard, sequence) with no state beyond p.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np


class SourceExhausted(ValueError):
    """A source with `whenExhausted: fail` was asked for more sequences than its shards hold."""


def _stable_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class SourceOrder:
    name: str
    seed: int
    sequences_per_shard: tuple[int, ...]
    repeat: bool

    @property
    def sequences(self) -> int:
        return sum(self.sequences_per_shard)

    def _rng(self, *path: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, _stable_key(self.name), *path]))

    @functools.lru_cache(maxsize=4)
    def shard_order(self, epoch: int) -> np.ndarray:
        """Shard ids in the order epoch `epoch` reads them."""
        return self._rng(epoch).permutation(len(self.sequences_per_shard))

    @functools.lru_cache(maxsize=4)
    def _epoch_ends(self, epoch: int) -> np.ndarray:
        sizes = np.asarray(self.sequences_per_shard, dtype=np.int64)
        return np.cumsum(sizes[self.shard_order(epoch)])

    @functools.lru_cache(maxsize=256)
    def within_shard(self, epoch: int, shard: int) -> np.ndarray:
        return self._rng(epoch, shard + 1).permutation(self.sequences_per_shard[shard])

    def check_available(self, needed: int) -> None:
        if self.sequences == 0 and needed > 0:
            raise SourceExhausted(f"source '{self.name}' has no complete sequence in its shards")
        if not self.repeat and needed > self.sequences:
            raise SourceExhausted(
                f"source '{self.name}' needs {needed:,} sequences but its shards hold {self.sequences:,} "
                "(data.whenExhausted is 'fail'; prepare more data, lower its weight or data.totalTokens, "
                "or set whenExhausted: repeat)"
            )

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard id, sequence index inside that shard) for each source position."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        self.check_available(int(positions.max()) + 1)
        epochs, within_epoch = np.divmod(positions, self.sequences)
        shards = np.empty_like(positions)
        local = np.empty_like(positions)
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            ends = self._epoch_ends(int(epoch))
            slot = np.searchsorted(ends, within_epoch[sel], side="right")
            shard_ids = self.shard_order(int(epoch))[slot]
            offsets = within_epoch[sel] - (ends[slot] - np.asarray(self.sequences_per_shard)[shard_ids])
            shards[sel] = shard_ids
            out = np.empty(len(shard_ids), dtype=np.int64)
            for shard in np.unique(shard_ids):
                in_shard = shard_ids == shard
                out[in_shard] = self.within_shard(int(epoch), int(shard))[offsets[in_shard]]
            local[sel] = out
        return shards, local

    def upcoming_shards(self, position: int, count: int) -> list[int]:
        """The next `count` distinct shard reads from `position` on (the prefetcher's look-ahead)."""
        if self.sequences == 0:
            return []
        out: list[int] = []
        epoch, within = divmod(position, self.sequences)
        slot = int(np.searchsorted(self._epoch_ends(epoch), within, side="right"))
        while len(out) < count:
            if slot >= len(self.sequences_per_shard):
                if not self.repeat:
                    break
                epoch, slot = epoch + 1, 0
            shard = int(self.shard_order(epoch)[slot])
            if self.sequences_per_shard[shard] and shard not in out:
                out.append(shard)
            elif shard in out:
                break
            slot += 1
        return out
