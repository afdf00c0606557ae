"""Shard locality of the mixed stream (lanes.py + assign.py through the real loader, real shards of GPT-2
tokens of Python's own docs): with W in {1, 2, 3, 8} ranks each rank touches about 1/W of every source's
shards, while every step keeps exactly the scheduled per-source counts, the global batch (a multiset)
is the same for every W, and a resume with another world size reads exactly the uninterrupted stream."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from trainkit import storage
from trainkit.data import MixtureLoader, MixtureSource, load_tokenizer, sequences_needed
from trainkit.data.schedule import integer_weights, schedule
from trainkit.data.shards import index_document, shard_record

SEQ = 8  # 9-token sequences: many sequences per shard from a little text
# Per-chunk checksums of 256 bytes (~14 rows; `trainkit prepare` writes 64 KiB): every shard has many chunks,
# so ranged windows and spilled rows are widened to chunk edges and checked, edge chunks reused from the cache.
CHUNK = 256
WORLDS = (1, 2, 3, 8)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three sources of 12-14 shards of uneven sizes (each with a tail under one sequence), with chunk checksums."""
    from pydoc_data.topics import topics

    tok = load_tokenizer("gpt2")
    keys = sorted(topics)
    root = tmp_path_factory.mktemp("locality")
    rng = np.random.default_rng(3)
    out = []
    for j, name in enumerate(("manuals", "web", "edu")):
        ids = np.array([t for k in keys[j::3] for t in tok.encode(topics[k]) + [tok.eos_id]], dtype=np.uint16)
        shards, at = [], 0
        for k in range(12 + j):
            n = int(rng.integers(150, 260)) * (SEQ + 1) + int(rng.integers(0, SEQ))
            part = np.resize(np.roll(ids, -at), n)  # real text, wrapped round where a source is short
            at += n
            data, entry = shard_record(f"shards/{k:03d}.bin", part, np.dtype("<u2"), 0, chunk_bytes=CHUNK)
            storage.write_bytes(str(root / name / entry["file"]), data)
            shards.append(entry)
        storage.write_json(
            str(root / name / "index.json"),
            index_document(
                dtype=np.dtype("<u2"), tokenizer=tok, shards=shards, source_files=[], shard_tokens=n, chunk_bytes=CHUNK
            ),
        )
        out.append((name, str(root / name), len(shards)))
    return out


def open_loaders(sources, weights, world, global_batch, seed, total, buffer=64 << 10):
    tok = load_tokenizer("gpt2")
    mixture = [MixtureSource(name, uri, w) for (name, uri, _), w in zip(sources, weights)]
    return [
        MixtureLoader(
            mixture,
            seq_length=SEQ,
            global_batch=global_batch,
            micro_batch=global_batch // world,
            rank=r,
            world_size=world,
            seed=seed,
            fingerprint=tok.fingerprint,
            vocab_size=50257,
            when_exhausted="fail",
            total_sequences=total,
            buffer_bytes=buffer,
        )
        for r in range(world)
    ]


def step_rows(loaders) -> tuple[list[list[bytes]], list[np.ndarray]]:
    rows, slots = [], []
    for ld in loaders:
        rows.append([r.tobytes() for mb in ld.next_step() for r in mb.numpy()])
        slots.append(ld.last_slots.copy())
    return rows, slots


@settings(
    max_examples=10,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    world=st.sampled_from(WORLDS),
    resume_world=st.sampled_from(WORLDS),
    global_batch=st.sampled_from([48, 96, 120, 240]),
    weights=st.lists(st.floats(0.15, 1.0), min_size=3, max_size=3),
    seed=st.integers(0, 3),
    resume_fraction=st.floats(0.1, 0.9),
)
def test_each_rank_touches_its_share_of_shards_and_the_stream_stays_exact(
    sources, world, resume_world, global_batch, weights, seed, resume_fraction
):
    held = [n for *_, n in sources]
    tok_sizes = [
        MixtureLoader(
            [MixtureSource(n, u, 1.0)],
            seq_length=SEQ,
            global_batch=global_batch,
            micro_batch=1,
            fingerprint=load_tokenizer("gpt2").fingerprint,
            vocab_size=50257,
        )
        .orders[0]
        .sequences
        for n, u, _ in sources
    ]
    # As many whole steps as one epoch of every source allows (whenExhausted: fail).
    steps = 1
    while all(need <= have for need, have in zip(sequences_needed(weights, (steps + 1) * global_batch), tok_sizes)):
        steps += 1
    total = steps * global_batch
    at = max(1, int(steps * resume_fraction))
    scheduled = schedule(weights, 0, total)

    reference = open_loaders(sources, weights, 1, global_batch, seed, total)[0]
    expected = [Counter(r.tobytes() for mb in reference.next_step() for r in mb.numpy()) for _ in range(steps)]
    reference.close()

    loaders = open_loaders(sources, weights, world, global_batch, seed, total)
    for s in range(steps):
        rows, slots = step_rows(loaders)
        assert all(len(r) == global_batch // world for r in rows)  # exactly G/W on every rank
        flat = np.concatenate(slots)
        assert sorted(flat.tolist()) == list(range(global_batch))  # every slot once: the step's own G
        assert Counter(b for r in rows for b in r) == expected[s]  # the global batch, whatever W
        for r in range(len(loaders)):  # per-source counts of the step are the schedule's
            got = np.bincount(scheduled[s * global_batch : (s + 1) * global_batch][slots[r]], minlength=3)
            assert got.sum() == global_batch // world
        if s + 1 == at:
            state = loaders[0].state_dict()
    total_shards = sum(held)
    bound = 1.25 * total_shards / world + len(sources)
    for ld in loaders:
        fetched = ld.traffic.window_shards  # shards this rank reads in bulk (windows of its own lanes)
        assert {e for _, e, _ in fetched | ld.traffic.row_shards} == {0}  # one epoch, nothing read twice
        assert len(fetched) <= bound, (world, ld.rank, len(fetched), bound)
        # Besides those, the few rows a step hands over across a block edge, read row by row.
        assert ld.traffic.spilled_rows <= 0.15 * steps * global_batch / world
        ld.close()

    # Resume at step `at` with another world size: the remaining steps are the uninterrupted ones.
    resumed = open_loaders(sources, weights, resume_world, global_batch, seed, total)
    for ld in resumed:
        ld.load_state_dict(state)
    for s in range(at, steps):
        rows, _ = step_rows(resumed)
        assert Counter(b for r in rows for b in r) == expected[s]
    for ld in resumed:
        ld.close()


def test_mixture_prefixes_of_the_stream_stay_within_one_sequence(sources):
    weights = [0.5, 0.3, 0.2]
    w = np.asarray(integer_weights(weights), float)
    w /= w.sum()
    stream = schedule(weights, 0, 20_000)
    n = np.arange(1, len(stream) + 1)
    assert max(np.abs(np.cumsum(stream == j) - n * w[j]).max() for j in range(3)) < 1.0


def test_per_rank_traffic_shrinks_with_the_world_size(sources):
    """Bytes fetched per rank at W = 8 are about an eighth of W = 1's: beyond the rows it hands out, a
    rank fetches only its look-ahead (at most the prefetch buffer), the rows spilled across edges and the
    chunk edges its reads are widened to for their checksums (at most two chunks per request)."""
    weights, g, buffer = [0.5, 0.3, 0.2], 240, 4 << 10
    total = 16 * g
    fetched, consumed, edges = {}, {}, {}
    for world in (1, 8):
        loaders = open_loaders(sources, weights, world, g, 0, total, buffer)
        for _ in range(16):
            step_rows(loaders)
        fetched[world] = [ld.traffic.bytes_fetched for ld in loaders]
        consumed[world] = [ld.traffic.bytes_consumed for ld in loaders]
        edges[world] = [2 * CHUNK * ld.traffic.requests for ld in loaders]
        for ld, edge in zip(loaders, edges[world]):
            # The look-ahead: two windows per owned lane per source (at least a step's worth each).
            ahead = sum(2 * len(ld.own_lanes) * b * (SEQ + 1) * 2 for b in ld._windows.window_items)
            assert ld.traffic.bytes_fetched <= ld.traffic.bytes_consumed + max(buffer, ahead) + edge
            ld.close()
    assert consumed[8] == [consumed[1][0] // 8] * 8
    assert all(f <= 1.1 * consumed[1][0] / 8 + buffer + e for f, e in zip(fetched[8], edges[8]))
    assert sum(fetched[8]) <= 1.1 * fetched[1][0] + 8 * buffer, (fetched, consumed)  # nothing read twice
