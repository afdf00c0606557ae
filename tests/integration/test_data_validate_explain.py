"""`trainkit validate --explain` reports, before training, a source that cannot cover its share."""

from __future__ import annotations

import numpy as np
import yaml

from trainkit import storage
from trainkit.cli import main
from trainkit.data import load_tokenizer
from trainkit.data.shards import encode_shard, index_document

TEXT = "Every prefix of the stream matches the weights to within one sequence per source. "


def write_source(folder, sequences: int, seq_length: int) -> None:
    """A prepared source of real GPT-2 tokens holding exactly `sequences` sequences of seq_length+1."""
    tok = load_tokenizer("gpt2")
    ids = np.array((tok.encode(TEXT) + [tok.eos_id]) * (sequences * (seq_length + 1)), dtype=np.uint16)
    tokens = ids[: sequences * (seq_length + 1)]
    data, crc = encode_shard(tokens, np.dtype("<u2"))
    storage.write_bytes(str(folder / "shards" / "s-00000.bin"), data)
    storage.write_json(
        str(folder / "index.json"),
        index_document(
            dtype=np.dtype("<u2"),
            tokenizer=tok,
            shard_tokens=len(tokens),
            source_files=[],
            shards=[
                {"file": "shards/s-00000.bin", "tokens": len(tokens), "documents": 1, "bytes": len(data), "crc32": crc}
            ],
        ),
    )


def run_file(tmp_path, when_exhausted: str) -> str:
    run = yaml.safe_load(open("jobs/quickstart.yaml"))
    run["spec"]["data"].update({"whenExhausted": when_exhausted, "totalTokens": 128 * 8 * 100})  # 800 sequences
    run["spec"]["data"]["sources"] = [
        {"name": "big", "uri": str(tmp_path / "big"), "weight": 0.99},
        {"name": "small", "uri": str(tmp_path / "small"), "weight": 0.01},
    ]
    path = tmp_path / f"run-{when_exhausted}.yaml"
    path.write_text(yaml.safe_dump(run))
    return str(path)


def test_explain_fails_a_run_whose_source_runs_out(tmp_path, capsys):
    write_source(tmp_path / "big", 792, 128)
    write_source(tmp_path / "small", 7, 128)  # the plan takes 8 from it
    assert main(["validate", "--explain", run_file(tmp_path, "fail")]) == 1
    out = capsys.readouterr().out
    assert "big    792 / 792  ok" in out
    assert "small  8 / 7  ERROR exhausted: needs 8 sequences, shards hold 7 (whenExhausted: fail)" in out


def test_explain_reports_repeats_when_allowed(tmp_path, capsys):
    write_source(tmp_path / "big", 792, 128)
    write_source(tmp_path / "small", 4, 128)
    assert main(["validate", "--explain", run_file(tmp_path, "repeat")]) == 0
    assert "small  8 / 4  repeats: 2.0 passes (whenExhausted: repeat)" in capsys.readouterr().out


def test_unreachable_sources_are_reported_not_fatal(tmp_path, capsys):
    assert main(["validate", "--explain", run_file(tmp_path, "fail")]) == 0
    assert "not reachable" in capsys.readouterr().out
