"""The pure rules of held-out validation: the hash split, which rows are measured, how ranks share them,
and the validation.jsonl record."""

from __future__ import annotations

import numpy as np

from trainkit import artifacts
from trainkit.data.prepare import held_out
from trainkit.data.shards import ShardEntry, ShardIndex
from trainkit.train.validation import rank_slice, summarise, validation_pieces


def index_with(validation_tokens: list[int]) -> ShardIndex:
    entries = tuple(ShardEntry(f"validation/v-{i}.bin", t, 1, 2 * t, 0) for i, t in enumerate(validation_tokens))
    return ShardIndex("s3://bucket/src", np.dtype("<u2"), "gpt2", "fp", 50257, 50256, (), (), entries, 0.1)


def test_held_out_is_a_function_of_the_text_and_about_the_fraction():
    texts = [f"document number {i}" for i in range(4000)]
    picked = [t for t in texts if held_out(t, 0.1)]
    assert 300 < len(picked) < 500
    assert picked == [t for t in texts if held_out(t, 0.1)]  # deterministic
    assert not any(held_out(t, 0.0) for t in texts)
    assert set(picked) <= {t for t in texts if held_out(t, 0.2)}  # a larger fraction keeps the smaller split


def test_validation_pieces_take_whole_rows_shard_by_shard_up_to_the_budget():
    index = index_with([100, 35, 1000])
    # width 33: 3 rows in shard 0 (99 tokens), 1 in shard 1; 5 rows wanted (5 * 32 = 160 tokens).
    pieces = validation_pieces(index, 33, 160)
    assert [(p.shard, p.first, p.stop) for p in pieces] == [(0, 0, 3), (1, 0, 1), (2, 0, 1)]
    assert validation_pieces(index, 33, 0) == []
    assert validation_pieces(index_with([]), 33, 160) == []
    assert sum(p.stop - p.first for p in validation_pieces(index, 33, 10**9)) == 3 + 1 + 30


def test_rank_slices_cover_every_row_once_with_equal_passes():
    for rows in (0, 1, 5, 8):
        for world in (1, 2, 3):
            slices = [rank_slice(rows, r, world, 2) for r in range(world)]
            assert sorted(i for mine, _ in slices for i in mine) == list(range(rows))
            assert len({passes for _, passes in slices}) == 1
            assert all(len(mine) <= 2 * passes for mine, passes in slices)


def test_summarise_and_parse_round_trip():
    line = summarise(10, 1280, {"a": (6.0, 3), "b": (2.0, 2), "empty": (0.0, 0)})
    assert line["sources"] == {"a": {"loss": 2.0, "tokens": 3}, "b": {"loss": 1.0, "tokens": 2}}
    assert line["mean"] == 1.5  # every source counted once
    import json

    # a validation target is measured beside the sources, listed, and left out of the mean unless counted
    with_target = summarise(10, 1280, {"a": (6.0, 3), "b": (2.0, 2), "far": (9.0, 3)}, targets=("far",))
    assert with_target["sources"]["far"] == {"loss": 3.0, "tokens": 3} and with_target["targets"] == ["far"]
    assert with_target["mean"] == 1.5
    counted = summarise(10, 1280, {"a": (6.0, 3), "far": (9.0, 3)}, targets=("far",), in_mean=("a", "far"))
    assert counted["mean"] == 2.5
    assert artifacts.validation_line({**with_target, "targets": "far"}) is None  # a malformed list is no record
    text = json.dumps(line) + "\nnot json\n" + json.dumps({"step": 3, "sources": {"a": {"loss": "x"}}}) + "\n"
    lines, bad = artifacts.parse_validation(text)
    assert lines == [line] and bad == 2


def test_a_sweep_run_still_measures_the_template_sources_its_mixture_leaves_out():
    from trainkit.spec.search import with_mixture
    from trainkit.train.validation import mean_sets
    from trainkit.spec.models import DataSpec

    template = {
        "totalTokens": 4096,
        "sources": [{"name": n, "uri": f"s3://bucket/{n}", "weight": 1.0} for n in ("a", "b", "c")],
        "validationTargets": [{"name": "downstream", "uri": "s3://bucket/d"}],
    }
    data = DataSpec.model_validate(with_mixture(template, {"a": 0.7, "c": 0.3}))
    assert [(s.name, s.weight) for s in data.sources] == [("a", 0.7), ("c", 0.3)]
    assert [(t.name, t.uri, t.count_in_mean) for t in data.validation_targets] == [
        ("downstream", "s3://bucket/d", False),  # the user's own target stays out of the mean
        ("b", "s3://bucket/b", True),  # the left-out source is measured and counted
    ]
    assert sorted(mean_sets(data)) == ["a", "b", "c"]
    assert [s.name for s in data.held_out_sets()] == ["a", "c", "downstream", "b"]
    assert template["sources"][1]["weight"] == 1.0  # the template is not changed
