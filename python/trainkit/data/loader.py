"""`MixtureLoader`: the mixed token stream a training rank reads (the I/O shell around the pure parts).

Global sequence i comes from source `schedule(i)` (schedule.py), at that source's next position p, which
lies in epoch p // S at a place of the epoch's shard order (order.py) given by the lanes (lanes.py); the
step's G sequences are split over the ranks by assign.py (each rank near its own block of lanes). None
of that depends on the world size except the split, so resuming, also with another world size, is "go to
k" (the state is k and the schedule's per-source counts). Each rank fetches contiguous windows of the
lanes it owns as byte ranges, double-buffered in the background, and the few rows a step gives it from
other ranks' lanes one by one; everything is verified (length, token ids < vocab, the CRC-32 of every
chunk read, or of the whole shard).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import threading
from dataclasses import dataclass, field

import numpy as np

from trainkit.data.assign import assign_step
from trainkit.data.lanes import DEFAULT_LANES, lane_cycle, lane_lengths, lane_owner, lane_starts, place_in_epoch
from trainkit.data.order import SourceExhausted, SourceOrder
from trainkit.data.partition import BatchGeometry, rank_slice
from trainkit.data.schedule import ScheduleCursor, counts_at, integer_weights, source_positions
from trainkit.data.shards import ChunkCache, DataError, Piece, check_compatible, read_index, read_pieces
from trainkit.storage import StorageOptions

# 2: lanes (the stream reads K places of each epoch at once) and the schedule's counts stored for an
# O(sources) resume. Version-1 states (no lanes) resume by recomputing the counts.
STATE_VERSION = 2


@dataclass(frozen=True)
class MixtureSource:
    name: str
    uri: str
    weight: float


@dataclass
class Traffic:
    """What this loader fetched and handed out, for `trainkit bench data` and the locality tests."""

    bytes_fetched: int = 0
    bytes_consumed: int = 0
    requests: int = 0
    windows: int = 0
    spilled_rows: int = 0  # rows of another rank's lanes, read one by one
    window_shards: set = field(default_factory=set)  # (source, epoch, shard) read through own windows
    row_shards: set = field(default_factory=set)  # (source, epoch, shard) touched by spilled rows


def window_code(key: tuple[int, int, int, int], lanes: int) -> int:
    """(source, epoch, lane, window) -> one int64 for vectorised look-ups (within one source)."""
    _, epoch, lane, w = key
    return ((epoch * lanes + lane) << 32) + w


def window_key(j: int, code: int, lanes: int) -> tuple[int, int, int, int]:
    return (j, (code >> 32) // lanes, (code >> 32) % lanes, code & 0xFFFFFFFF)


class LaneWindows:
    """The I/O shell around lanes.py: contiguous windows of each lane this rank owns, fetched as byte
    ranges in the background (one batch of concurrent ranged GETs per refill), double-buffered: while a
    lane's window w is read, window w + 1 is on its way. Windows last the same number of steps for every
    source (`window_items` is sized from each source's rate, see MixtureLoader).

    Each source's windows live in one preallocated array `slots x window x width`, so a step's rows are
    gathered with one fancy index per source, however many lanes they come from."""

    def __init__(self, loader: MixtureLoader, window_items: list[int], threads: int, lanes_owned: int):
        self._ld, self.window_items = loader, window_items
        self._pool = cf.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="trainkit-prefetch")
        self._held: dict[tuple[int, int, int, int], cf.Future] = {}  # (source, epoch, lane, window)
        self._slot: dict[tuple[int, int, int, int], int] = {}
        self._waiting: list[set] = [set() for _ in window_items]  # requested, not yet seen arrive
        self._table: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # source -> (sorted codes, slots)
        dtype = loader.indexes[0].dtype if loader.indexes else np.dtype("<u2")
        # Two windows per owned lane (this one and the next) plus one spare per lane for a step that
        # reaches past both; np.empty: pages are only touched when a window is written.
        self._arena = [np.empty((3 * lanes_owned, b, loader.width), dtype=dtype) for b in window_items]
        self._free = [list(range(3 * lanes_owned)) for _ in window_items]
        self._lock = threading.Lock()

    def window_pieces(self, j: int, epoch: int, lane: int, w: int) -> list[Piece]:
        ld = self._ld
        S, B = ld.orders[j].sequences, self.window_items[j]
        starts = lane_starts(S, ld.lanes)
        lo = int(starts[lane]) + w * B
        hi = min(int(starts[lane + 1]), lo + B)
        return ld.pieces_of(j, epoch, lo, hi)

    def _allocate(self, j: int) -> int:
        if not self._free[j]:  # only when steps outrun two windows per lane: grow, never drop data in use
            old = self._arena[j]
            self._arena[j] = np.concatenate([old, np.empty_like(old)])
            self._free[j] = list(range(len(old), 2 * len(old)))
        return self._free[j].pop()

    def request(self, keys: list[tuple[int, int, int, int]]) -> None:
        """Start fetching the windows not yet held, all in one background job per source."""
        by_source: dict[int, list] = {}
        with self._lock:
            for k in keys:
                if k not in self._held:
                    self._held[k] = cf.Future()
                    self._slot[k] = self._allocate(k[0])
                    self._waiting[k[0]].add(k)
                    self._table.pop(k[0], None)
                    by_source.setdefault(k[0], []).append(k)
        for j, ks in by_source.items():
            self._pool.submit(self._fetch, j, ks, [self._held[k] for k in ks], [self._slot[k] for k in ks])

    def _fetch(self, j: int, keys: list, futures: list, slots: list) -> None:
        try:
            plans = [self.window_pieces(*k) for k in keys]
            parts = self._ld.read(j, [p for plan in plans for p in plan])
            self._ld.traffic.windows += len(keys)
            i = 0
            for k, fut, slot, plan in zip(keys, futures, slots, plans):
                at = 0
                for p, rows in zip(plan, parts[i : i + len(plan)]):
                    self._arena[j][slot, at : at + len(rows)] = rows
                    at += len(rows)
                    self._ld.traffic.window_shards.add((j, k[1], p.shard))
                i += len(plan)
                fut.set_result(slot)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits for these windows
            for fut in futures:
                if not fut.done():
                    fut.set_exception(e)

    def gather(self, j: int, codes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Rows `offsets` of the windows `codes` (see `window_code`) of source j, without a Python loop
        over windows in the usual case (every window held and arrived)."""
        table = self._table.get(j)
        if table is None:
            with self._lock:
                held = sorted((window_code(k, self._ld.lanes), self._slot[k]) for k in self._held if k[0] == j)
            table = self._table[j] = (
                np.array([c for c, _ in held], np.int64),
                np.array([s for _, s in held], np.int64),
            )
        at = np.searchsorted(table[0], codes)
        missing = (
            (at >= len(table[0])) | (table[0][np.minimum(at, len(table[0]) - 1)] != codes)
            if len(table[0])
            else np.ones(len(codes), bool)
        )
        if missing.any():  # a step that reaches past the prefetched windows: fetch now, then look again
            self.request([window_key(j, int(c), self._ld.lanes) for c in np.unique(codes[missing])])
            return self.gather(j, codes, offsets)
        if self._waiting[j]:
            # Wait for the windows these rows lie in, and only those: the windows requested ahead of them
            # keep arriving in the background meanwhile (waiting for every pending window would make each
            # lane's crossing into its next window a stall, fetch and compute taking turns).
            needed = {window_key(j, int(c), self._ld.lanes) for c in np.unique(codes)}
            with self._lock:
                arriving = [(k, self._held[k]) for k in needed & self._waiting[j]]
            for k, fut in arriving:
                fut.result()  # raises the fetch's DataError, if any
                with self._lock:
                    self._waiting[j].discard(k)
        return self._arena[j][table[1][at], offsets]

    def keep_only(self, wanted: set) -> None:
        """Drop every held window not in `wanted` (the ones in use and the ones just ahead); a slot
        whose fetch is still running is freed when that fetch ends."""
        with self._lock:
            for k in [k for k in self._held if k not in wanted]:
                fut, slot = self._held.pop(k), self._slot.pop(k)
                self._waiting[k[0]].discard(k)
                self._table.pop(k[0], None)
                if fut.done():
                    self._free[k[0]].append(slot)
                else:
                    fut.add_done_callback(functools.partial(self._release, k[0], slot))

    def _release(self, j: int, slot: int, _done: cf.Future | None = None) -> None:
        with self._lock:
            self._free[j].append(slot)

    def held(self) -> int:
        return len(self._held)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._held, self._slot, self._table = {}, {}, {}


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
        options: StorageOptions | None = None,
        lanes: int = DEFAULT_LANES,
        # Memory for prefetched windows on this rank, all sources together (two windows per owned lane).
        buffer_bytes: int = 256 << 20,
        # Background jobs at once (default: one per source, at most 4); each job's ranged GETs also run
        # concurrently (storage.read_ranges), so a step's windows of every source arrive side by side.
        threads: int | None = None,
    ):
        if when_exhausted not in ("fail", "repeat"):
            raise ValueError(f"whenExhausted must be 'fail' or 'repeat', got {when_exhausted!r}")
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.sources = list(sources)
        self.weights = [s.weight for s in self.sources]
        integer_weights(self.weights)  # rejects empty / non-positive weights early
        self.seq_length, self.seed, self.vocab_size, self.lanes = seq_length, seed, vocab_size, lanes
        self.width = seq_length + 1
        self.geometry = BatchGeometry(global_batch, micro_batch, world_size)
        self.rank = rank
        rank_slice(0, rank, self.geometry)  # validates rank
        self.total_sequences = total_sequences
        self.options = options
        self.indexes = [read_index(s.uri, options) for s in self.sources]
        for s, index in zip(self.sources, self.indexes):
            check_compatible(index, fingerprint=fingerprint, vocab_size=vocab_size, source=s.name)
        self.orders = [
            SourceOrder(s.name, seed, index.sequences_per_shard(self.width), when_exhausted == "repeat")
            for s, index in zip(self.sources, self.indexes)
        ]
        for order in self.orders:
            order.check_available(1)
        if total_sequences is not None:
            for order, needed in zip(self.orders, sequences_needed(self.weights, total_sequences)):
                order.check_available(needed)
        self.own_lanes = np.flatnonzero(lane_owner(np.arange(lanes), lanes, world_size) == rank)
        self.traffic = Traffic()
        self._traffic_lock = threading.Lock()
        self._chunks = [ChunkCache() for _ in self.sources]  # verified edge chunks, per source
        self._epoch_ends: dict[tuple[int, int], np.ndarray] = {}
        self._windows = LaneWindows(
            self, self.window_sizes(buffer_bytes), threads or min(4, len(self.sources)), max(1, len(self.own_lanes))
        )
        self._cursor = ScheduleCursor(self.weights)
        self.last_slots = np.empty(0, np.int64)
        self._prefetched: list = []
        self._prefetch()

    def window_sizes(self, buffer_bytes: int) -> list[int]:
        """Sequences per window for each source, sized from the step rate: lane l of source j takes
        about G w_j / K sequences a step, so windows of T G w_j / K sequences all last T steps, and T is
        the most that two windows per owned lane of every source fit in `buffer_bytes`."""
        g, k = self.geometry.global_batch, self.lanes
        row = self.width * (self.indexes[0].dtype.itemsize if self.indexes else 2)
        owned = max(1, len(self.own_lanes))
        w = np.asarray(integer_weights(self.weights), dtype=np.float64)
        w /= w.sum()
        steps = max(1.0, buffer_bytes * k / (2 * owned * row * g))
        longest = [max(1, int(lane_lengths(o.sequences, k).max())) for o in self.orders]
        return [int(min(longest[j], max(1, np.ceil(steps * g * w[j] / k)))) for j in range(len(self.orders))]

    # ------------------------------------------------------------------ construction from a run spec
    @classmethod
    def from_spec(
        cls, spec, plan, *, rank: int, world_size: int, options: StorageOptions | None = None, **kwargs
    ) -> MixtureLoader:
        from trainkit.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(spec.tokenizer)
        d, t = spec.data, spec.training
        return cls(
            [MixtureSource(s.name, s.shards_uri, s.weight) for s in d.sources],
            seq_length=d.seq_length,
            global_batch=t.global_batch_size,
            micro_batch=t.micro_batch_size,
            rank=rank,
            world_size=world_size,
            seed=t.seed,
            fingerprint=tokenizer.fingerprint,
            vocab_size=spec.model.architecture()["vocab_size"],
            when_exhausted=d.when_exhausted,
            total_sequences=plan.total_sequences,
            options=options if options is not None else StorageOptions.from_spec(spec.storage),
            **kwargs,
        )

    # ------------------------------------------------------------------------- where a row lies
    def _ends(self, j: int, epoch: int) -> np.ndarray:
        key = (j, epoch)
        if key not in self._epoch_ends:
            if len(self._epoch_ends) > 4 * len(self.orders):
                self._epoch_ends.clear()
            sizes = np.asarray(self.orders[j].sequences_per_shard, dtype=np.int64)
            self._epoch_ends[key] = np.cumsum(sizes[self.orders[j].shard_order(epoch)])
        return self._epoch_ends[key]

    def pieces_of(self, j: int, epoch: int, lo: int, hi: int) -> list[Piece]:
        """Sequences [lo, hi) of source j's epoch array E as per-shard pieces."""
        order = self.orders[j]
        perm, ends = order.shard_order(epoch), self._ends(j, epoch)
        out, x = [], lo
        while x < hi:
            slot = int(np.searchsorted(ends, x, side="right"))
            shard = int(perm[slot])
            shard_start = int(ends[slot]) - order.sequences_per_shard[shard]
            stop = min(hi, int(ends[slot]))
            out.append(Piece(shard, x - shard_start, stop - shard_start))
            x = stop
        return out

    def read(self, j: int, pieces: list[Piece]) -> list[np.ndarray]:
        return read_pieces(
            self.indexes[j], pieces, self.width, self.vocab_size, self.options, self._chunks[j], self._count_fetch
        )

    def _count_fetch(self, requests: int, nbytes: int) -> None:
        with self._traffic_lock:  # windows (background thread) and spilled rows (caller) both fetch
            self.traffic.requests += requests
            self.traffic.bytes_fetched += nbytes

    def _locate(self, sources: np.ndarray, positions: np.ndarray):
        """(epoch, place in E, lane, item in lane) of each row."""
        n = len(sources)
        epochs, places, lanes, items = (np.empty(n, np.int64) for _ in range(4))
        for j in np.unique(sources):
            rows = np.flatnonzero(sources == j)
            order = self.orders[int(j)]
            order.check_available(int(positions[rows].max()) + 1)
            e, q = np.divmod(positions[rows], order.sequences)
            epochs[rows] = e
            places[rows], lanes[rows], items[rows] = place_in_epoch(q, order.sequences, self.lanes)
        return epochs, places, lanes, items

    def _rows(self, sources, epochs, places, lanes, items, everything: bool) -> np.ndarray:
        """Tokens of the given rows: from this rank's lane windows, or read one by one where a row lies
        in another rank's lane (`everything`: this reader owns every lane)."""
        out = np.empty((len(sources), self.width), dtype=self.indexes[0].dtype if self.indexes else np.int64)
        own = np.ones(len(sources), bool) if everything else np.isin(lanes, self.own_lanes)
        for j in np.unique(sources):
            j = int(j)
            B = self._windows.window_items[j]
            mine = np.flatnonzero((sources == j) & own)
            windows, offsets = np.divmod(items[mine], B)
            code = ((epochs[mine] * self.lanes + lanes[mine]) << 32) + windows  # = window_code
            if len(mine):
                out[mine] = self._windows.gather(j, code, offsets)
            spilled = np.flatnonzero((sources == j) & ~own)
            if len(spilled):
                pieces = [
                    self.pieces_of(j, int(e), int(x), int(x) + 1)[0] for e, x in zip(epochs[spilled], places[spilled])
                ]
                out[spilled] = np.concatenate(self.read(j, pieces))
                self.traffic.spilled_rows += len(spilled)
                for e, p in zip(epochs[spilled], pieces):
                    self.traffic.row_shards.add((j, int(e), p.shard))
        self.traffic.bytes_consumed += out.nbytes
        return out

    # ---------------------------------------------------------------------------------- reading
    @property
    def sequences_consumed(self) -> int:
        return self._cursor.position

    def read_global(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `count` global sequences (all ranks' worth): (source ids, tokens [count, L+1] in the
        shards' dtype), in stream order. Advances the stream (for benchmarks and tests)."""
        counts_before = list(self._cursor.counts)
        sources = self._cursor.take(count)
        positions = source_positions(sources, counts_before)
        epochs, places, lanes, items = self._locate(sources, positions)
        tokens = self._rows(sources, epochs, places, lanes, items, everything=True)
        self._prefetch()
        return sources, tokens

    def next_step(self, pin_memory: bool = False) -> list:
        """This rank's micro-batches for the next global step: `accumulation` LongTensors of shape
        (microBatchSize, seqLength + 1), views of one tensor (page-locked with `pin_memory`, for
        non-blocking copies to a GPU; the shards' dtype is widened straight into it). Every rank must call
        it once per step. `last_slots` then holds each row's index in the global batch (stream order)."""
        import torch

        g = self.geometry
        counts_before = list(self._cursor.counts)
        sources = self._cursor.take(g.global_batch)
        positions = source_positions(sources, counts_before)
        epochs, places, lanes, items = self._locate(sources, positions)
        mine = assign_step(sources, places, epochs, g.world_size, [o.sequences for o in self.orders])[self.rank]
        tokens = self._rows(sources[mine], epochs[mine], places[mine], lanes[mine], items[mine], everything=False)
        self.last_slots = mine
        self._prefetch()
        batch = torch.empty(tokens.shape, dtype=torch.int64, pin_memory=pin_memory)
        batch.numpy()[...] = tokens
        return list(batch.split(g.micro_batch))

    def _prefetch(self) -> None:
        """Each owned lane's window holding its next sequence and the window after it; nothing else.
        (Recomputed only when some lane crossed into another window.)"""
        cycle_slot = np.argsort(lane_cycle(self.lanes))[self.own_lanes]
        fronts = []
        for j, order in enumerate(self.orders):
            epoch, q0 = divmod(self._cursor.counts[j], order.sequences)
            items = np.maximum(0, -(-(q0 - cycle_slot) // self.lanes))
            fronts.append((epoch, items // self._windows.window_items[j]))
        signature = [(e, w.tobytes()) for e, w in fronts]
        if signature == self._prefetched:
            return
        self._prefetched = signature
        wanted, now = [], []
        for j, order in enumerate(self.orders):
            B = self._windows.window_items[j]
            lengths = lane_lengths(order.sequences, self.lanes)[self.own_lanes]
            epoch, windows = fronts[j]
            for lane, w, length in zip(self.own_lanes.tolist(), windows.tolist(), lengths.tolist()):
                here = (epoch, w) if w * B < length else (epoch + 1, 0)
                ahead = (here[0], here[1] + 1) if (here[1] + 1) * B < length else (here[0] + 1, 0)
                for e, win in (here, ahead):
                    if length and (order.repeat or e == 0):
                        wanted.append((j, e, lane, win))
                        if (e, win) == here:
                            now.append(wanted[-1])
        self._windows.keep_only(set(wanted))
        self._windows.request(now)  # first the windows the next step reads, then those after them
        self._windows.request(wanted)

    # ------------------------------------------------------------------------------------ state
    def source_sequences(self) -> dict[str, int]:
        """Global per-source sequence counts consumed so far (all ranks together)."""
        return {s.name: c for s, c in zip(self.sources, self._cursor.counts)}

    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "sequences_consumed": self._cursor.position,
            "seed": self.seed,
            "lanes": self.lanes,
            # The schedule's whole state: resume rebuilds the cursor from it in O(sources) (checked).
            "source_counts": list(self._cursor.counts),
            "source_sequences": self.source_sequences(),
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise DataError(f"loader state was saved with seed {state['seed']}, this run's seed is {self.seed}")
        if int(state.get("lanes", self.lanes)) != self.lanes:
            raise DataError(
                f"loader state was saved with {state['lanes']} lanes, this loader has {self.lanes}: "
                "the stream would differ"
            )
        consumed = int(state["sequences_consumed"])
        if consumed < 0 or consumed % self.geometry.global_batch:
            raise DataError(
                f"sequences_consumed {consumed} is not a whole number of global batches of {self.geometry.global_batch}"
            )
        counts = state.get("source_counts")
        if counts is not None:
            try:
                cursor = ScheduleCursor.at_counts(self.weights, counts)
            except ValueError as e:
                raise DataError(f"loader state: {e}") from e
            if cursor.position != consumed:
                raise DataError(
                    f"loader state: source_counts sum to {cursor.position}, sequences_consumed is {consumed}"
                )
        else:  # a state from before version 2: recompute the counts (about 1 s per million sequences)
            cursor = ScheduleCursor(self.weights)
            cursor.skip(consumed)
        self._cursor = cursor
        self._prefetched = []
        self._prefetch()

    def close(self) -> None:
        self._windows.close()

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
