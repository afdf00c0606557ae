"""`MixtureLoader`: the mixed token stream a training rank reads (the I/O shell around the pure parts).

Global sequence i comes from source `schedule(i)` (schedule.py), at that source's next position, which
maps to a (shard, sequence) by order.py; rank r reads its slice of each step (partition.py). The only
state is `sequences_consumed` (+ the seed), so resuming, also with another world size, is "skip to k".
Shards are fetched whole, verified (size, CRC-32, token ids < vocab) and prefetched by a small thread
pool a few shards ahead of every source, with a bounded number of shards held per source.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from dataclasses import dataclass

import numpy as np

from trainkit.data.order import SourceExhausted, SourceOrder
from trainkit.data.partition import BatchGeometry, rank_slice
from trainkit.data.schedule import ScheduleCursor, counts_at, integer_weights, source_positions
from trainkit.data.shards import DataError, ShardIndex, check_compatible, read_index, read_shard
from trainkit.storage import StorageOptions

STATE_VERSION = 1


@dataclass(frozen=True)
class MixtureSource:
    name: str
    uri: str
    weight: float


class ShardCache:
    """Whole shards in memory, fetched in the background; at most `keep` shards per source are kept
    besides the ones the current step reads."""

    def __init__(self, indexes: list[ShardIndex], vocab_size: int, options: StorageOptions | None, keep: int, threads: int):
        self._indexes, self._vocab, self._options, self.keep = indexes, vocab_size, options, keep
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="trainkit-prefetch")
        self._held: list[dict[int, cf.Future]] = [{} for _ in indexes]
        self._lock = threading.Lock()

    def _future(self, source: int, shard: int) -> cf.Future:
        with self._lock:
            fut = self._held[source].get(shard)
            if fut is None:
                fut = self._pool.submit(read_shard, self._indexes[source], shard, self._vocab, self._options)
                self._held[source][shard] = fut
            return fut

    def get(self, source: int, shard: int) -> np.ndarray:
        return self._future(source, shard).result()

    def want(self, source: int, shards: list[int]) -> None:
        """Start fetching `shards` (in read order) and drop every other shard of this source."""
        wanted = shards[: self.keep]
        with self._lock:
            for shard in list(self._held[source]):
                if shard not in wanted:
                    self._held[source].pop(shard).cancel()
        for shard in wanted:
            self._future(source, shard)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._held = [{} for _ in self._indexes]


class MixtureLoader:
    def __init__(
        self,
        sources: list[MixtureSource],
        *,
        seq_length: int,
        global_batch: int,
        micro_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        fingerprint: str,
        vocab_size: int,
        when_exhausted: str = "fail",
        total_sequences: int | None = None,
        storage: StorageOptions | None = None,
        prefetch_shards: int = 2,
        # One fetch at a time, in read order: whole-object GETs already run at the link's speed, and
        # concurrent s3fs calls from several threads were 3x slower in total here (they share one loop).
        threads: int = 1,
    ):
        if when_exhausted not in ("fail", "repeat"):
            raise ValueError(f"whenExhausted must be 'fail' or 'repeat', got {when_exhausted!r}")
        self.sources = list(sources)
        self.weights = [s.weight for s in self.sources]
        integer_weights(self.weights)  # rejects empty / non-positive weights early
        self.seq_length, self.seed, self.vocab_size = seq_length, seed, vocab_size
        self.geometry = BatchGeometry(global_batch, micro_batch, world_size)
        self.rank = rank
        rank_slice(0, rank, self.geometry)  # validates rank
        self.total_sequences = total_sequences
        self.indexes = [read_index(s.uri, storage) for s in self.sources]
        for s, index in zip(self.sources, self.indexes):
            check_compatible(index, fingerprint=fingerprint, vocab_size=vocab_size, source=s.name)
        self.orders = [
            SourceOrder(s.name, seed, index.sequences_per_shard(seq_length + 1), when_exhausted == "repeat")
            for s, index in zip(self.sources, self.indexes)
        ]
        for order in self.orders:
            order.check_available(1)
        if total_sequences is not None:
            for order, needed in zip(self.orders, sequences_needed(self.weights, total_sequences)):
                order.check_available(needed)
        self._cache = ShardCache(self.indexes, vocab_size, storage, keep=prefetch_shards + 1, threads=threads)
        self._cursor = ScheduleCursor(self.weights)
        self._prefetch()

    # ------------------------------------------------------------------ construction from a run spec
    @classmethod
    def from_spec(cls, spec, plan, *, rank: int, world_size: int, storage: StorageOptions | None = None, **kwargs) -> "MixtureLoader":
        from trainkit.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(spec.tokenizer)
        d, t = spec.data, spec.training
        return cls(
            [MixtureSource(s.name, s.uri, s.weight) for s in d.sources],
            seq_length=d.seq_length, global_batch=t.global_batch_size, micro_batch=t.micro_batch_size,
            rank=rank, world_size=world_size, seed=t.seed, fingerprint=tokenizer.fingerprint,
            vocab_size=spec.model.architecture()["vocab_size"], when_exhausted=d.when_exhausted,
            total_sequences=plan.total_sequences,
            storage=storage if storage is not None else StorageOptions.from_spec(spec.storage), **kwargs,
        )

    # ---------------------------------------------------------------------------------- reading
    @property
    def sequences_consumed(self) -> int:
        return self._cursor.position

    def read_global(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `count` global sequences (all ranks' worth): (source ids, tokens [count, L+1] in the
        shards' dtype).
        Advances the stream; next_step() uses it for one global batch and keeps this rank's slice."""
        counts_before = list(self._cursor.counts)
        sources = self._cursor.take(count)
        positions = source_positions(sources, counts_before)
        return sources, self._gather(sources, positions)

    def _gather(self, sources: np.ndarray, positions: np.ndarray) -> np.ndarray:
        width = self.seq_length + 1
        # The shards' own dtype (uint16 for GPT-2): a quarter of int64's bytes to copy; next_step widens.
        out = np.empty((len(sources), width), dtype=self.indexes[0].dtype if self.indexes else np.int64)
        for j in np.unique(sources):
            rows = np.flatnonzero(sources == j)
            shards, local = self.orders[j].locate(positions[rows])
            for shard in np.unique(shards):
                sel = shards == shard
                tokens = self._cache.get(int(j), int(shard))
                n = len(tokens) // width
                out[rows[sel]] = tokens[: n * width].reshape(n, width)[local[sel]]
        return out

    def next_step(self) -> list:
        """This rank's micro-batches for the next global step: `accumulation` LongTensors of shape
        (microBatchSize, seqLength + 1). Every rank must call it once per step."""
        import torch

        g = self.geometry
        step_start = self._cursor.position
        counts_before = list(self._cursor.counts)
        sources = self._cursor.take(g.global_batch)
        start, stop = rank_slice(0, self.rank, g)
        positions = source_positions(sources, counts_before)[start:stop]
        tokens = self._gather(sources[start:stop], positions)
        self._prefetch()
        assert self._cursor.position == step_start + g.global_batch
        batch = torch.from_numpy(tokens.astype(np.int64))
        return list(batch.split(g.micro_batch))

    def _prefetch(self) -> None:
        for j, order in enumerate(self.orders):
            self._cache.want(j, order.upcoming_shards(self._cursor.counts[j], self._cache.keep))

    # ------------------------------------------------------------------------------------ state
    def source_sequences(self) -> dict[str, int]:
        """Global per-source sequence counts consumed so far (all ranks together)."""
        return {s.name: c for s, c in zip(self.sources, self._cursor.counts)}

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "sequences_consumed": self._cursor.position,
            "seed": self.seed,
            # Informational (recomputed on load, never trusted): what the counts imply.
            "source_sequences": self.source_sequences(),
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise DataError(f"loader state was saved with seed {state['seed']}, this run's seed is {self.seed}")
        consumed = int(state["sequences_consumed"])
        if consumed < 0 or consumed % self.geometry.global_batch:
            raise DataError(
                f"sequences_consumed {consumed} is not a whole number of global batches of {self.geometry.global_batch}"
            )
        cursor = ScheduleCursor(self.weights)
        cursor.skip(consumed)
        self._cursor = cursor
        self._prefetch()

    def close(self) -> None:
        self._cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Up to this many sequences the exact per-source totals are computed by running the schedule (about
# 1 s per million); beyond it the bound ceil(n w_j), at most one sequence more, is used.
EXACT_NEEDS_LIMIT = 5_000_000


def sequences_needed(weights: list[float], total_sequences: int) -> list[int]:
    """What each source gives over `total_sequences` (exact, or an upper bound for very long runs)."""
    if total_sequences <= EXACT_NEEDS_LIMIT:
        return counts_at(weights, total_sequences)
    a = integer_weights(weights)
    total = sum(a)
    return [-(-total_sequences * w // total) for w in a]


__all__ = ["MixtureLoader", "MixtureSource", "SourceExhausted", "DataError", "sequences_needed"]
