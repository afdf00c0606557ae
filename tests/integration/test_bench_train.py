"""`trainkit bench train` keeps working on CPU: both loops run on the same batches, repeats interleaved,
windows paired, MFU from the plan's FLOPs per token against a peak measured in the same run. Speed is the
benchmark's to report, never asserted here."""

from __future__ import annotations

import json

import numpy as np

from trainkit import storage
from trainkit.cli import main
from trainkit.data import load_tokenizer
from trainkit.data.shards import index_document, shard_record


def test_bench_train_compares_both_loops_window_by_window(tmp_path, capsys):
    from pydoc_data.topics import topics

    tok = load_tokenizer("gpt2")
    docs = [topics[k] for k in sorted(topics)]
    for i, name in enumerate(("manuals", "web", "edu")):  # what `ensure_data` would prepare, made directly
        ids = np.array([t for d in docs[i::3][:15] for t in tok.encode(d) + [tok.eos_id]], dtype=np.uint16)
        data, entry = shard_record("shards/00000.bin", ids, np.dtype("<u2"), 15)
        uri = str(tmp_path / "data" / "shards" / name)
        storage.write_bytes(f"{uri}/{entry['file']}", data)
        storage.write_json(
            f"{uri}/index.json",
            index_document(
                dtype=np.dtype("<u2"), tokenizer=tok, shards=[entry], source_files=[], shard_tokens=len(ids)
            ),
        )
    out = tmp_path / "bench.json"
    args = ["bench", "train", "--device", "cpu", "--data", str(tmp_path / "data"), "--seq-length", "32"]
    args += ["--micro-batch", "2", "--steps", "4", "--log-every", "2", "--repeats", "2", "--json", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    printed = capsys.readouterr().out
    # Two interleaved repeats of each loop, two 2-step windows each, paired window by window.
    assert [len(w) for w in doc["windowTokensPerSecond"]["trainkit"]] == [2, 2]
    assert [len(w) for w in doc["windowTokensPerSecond"]["bare"]] == [2, 2]
    assert len(doc["windowRatios"]) == 4
    assert set(doc["ratio"]) == {"bestTokensPerSecond", "medianWindow", "medianTokensPerCpuSecond"}
    # MFU: the plan's FLOPs per token x tokens per CPU-second over a matmul's FLOPs per CPU-second in this run.
    from trainkit.spec.plan import flops_per_token
    from trainkit.spec.presets import resolved_architecture

    assert doc["flopsPerToken"] == flops_per_token(resolved_architecture("tiny", {}), 32)
    assert doc["peak"] == "measured fp32 matmul per CPU-second" and doc["peakFlops"] > 0
    for loop in ("trainkit", "bare"):
        expected = doc["tokensPerCpuSecond"][loop] * doc["flopsPerToken"] / doc["peakFlops"]
        assert abs(doc["mfu"][loop] - expected) <= 1e-12 * max(1.0, expected)
    assert "median of 4 paired 2-step windows" in printed and "MFU against" in printed
