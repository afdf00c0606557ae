"""Property tests of the whole loader on real shards (GPT-2 tokens of Python's own docs, local files):
resuming at a random step with a random new world size reads exactly the uninterrupted stream."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainkit import storage
from trainkit.data import MixtureLoader, MixtureSource, load_tokenizer
from trainkit.data.schedule import schedule
from trainkit.data.shards import encode_shard, index_document

SEQ = 16
GLOBAL = 12  # divisible by world sizes 1, 2, 3, 4, 6 with micro-batch 1 or 2


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Three sources of real text in several shards of uneven size."""
    from pydoc_data.topics import topics

    tok = load_tokenizer("gpt2")
    keys = sorted(topics)
    root = tmp_path_factory.mktemp("shards")
    out = []
    for j, (name, weight) in enumerate([("a", 0.6), ("b", 0.3), ("c", 0.1)]):
        ids = np.array([t for k in keys[j::3][:20] for t in tok.encode(topics[k]) + [tok.eos_id]], dtype=np.uint16)
        cuts = [0, len(ids) // 3, len(ids) // 2, len(ids)]
        shards = []
        for k in range(3):
            data, crc = encode_shard(ids[cuts[k] : cuts[k + 1]], np.dtype("<u2"))
            storage.write_bytes(str(root / name / f"shards/{k}.bin"), data)
            shards.append(
                {
                    "file": f"shards/{k}.bin",
                    "tokens": cuts[k + 1] - cuts[k],
                    "documents": 0,
                    "bytes": len(data),
                    "crc32": crc,
                }
            )
        storage.write_json(
            str(root / name / "index.json"),
            index_document(
                dtype=np.dtype("<u2"),
                tokenizer=tok,
                shards=shards,
                source_files=[],
                shard_tokens=max(s["tokens"] for s in shards),
            ),
        )
        out.append(MixtureSource(name, str(root / name), weight))
    return out


def open_loader(sources, rank, world, micro):
    return MixtureLoader(
        sources,
        seq_length=SEQ,
        global_batch=GLOBAL,
        micro_batch=micro,
        rank=rank,
        world_size=world,
        seed=3,
        fingerprint=load_tokenizer("gpt2").fingerprint,
        vocab_size=50257,
        when_exhausted="repeat",
    )


def steps(loaders, n):
    """n global batches in stream order: every rank's rows put at their slots in the global batch."""
    out = []
    for _ in range(n):
        per_rank = [ld.next_step() for ld in loaders]
        assert len({len(mb) for mb in per_rank}) == 1  # equal batch counts on every rank
        rows = np.concatenate([mb.numpy() for batches in per_rank for mb in batches])
        slots = np.concatenate([ld.last_slots for ld in loaders])
        assert sorted(slots.tolist()) == list(range(GLOBAL))  # no sequence on two ranks, none left out
        out.append(rows[np.argsort(slots)])
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    k=st.integers(0, 60),
    before=st.sampled_from([1, 2, 3]),
    after=st.sampled_from([1, 2, 4, 6]),
    micro=st.sampled_from([1, 2]),
)
def test_resume_at_random_step_with_new_world_size_equals_uninterrupted(sources, k, before, after, micro):
    if GLOBAL % (micro * before) or GLOBAL % (micro * after):
        return
    with open_loader(sources, 0, 1, 1) as single:
        single.load_state_dict({"sequences_consumed": k * GLOBAL, "seed": 3})
        expected = steps([single], 3)
    first = [open_loader(sources, r, before, micro) for r in range(before)]
    steps(first, 1)
    state = first[0].state_dict()
    for ld in first:
        ld.close()
    state["sequences_consumed"] = k * GLOBAL  # a checkpoint taken at step k
    del state["source_counts"]  # (forged: so the counts are recomputed from the position)
    resumed = [open_loader(sources, r, after, micro) for r in range(after)]
    for ld in resumed:
        ld.load_state_dict(state)
    got = steps(resumed, 3)
    # Global per-source counts after step k+3 are those of the schedule's first (k+3)*G sequences.
    counts = np.bincount(schedule([0.6, 0.3, 0.1], 0, (k + 3) * GLOBAL), minlength=3)
    assert resumed[0].source_sequences() == dict(zip("abc", counts.tolist()))
    for ld in resumed:
        ld.close()
    assert all(np.array_equal(e, g) for e, g in zip(expected, got))
