"""`trainkit bench prepare` keeps working: a small run where every peer produces the same tokens, our tokenizer
agrees with Hugging Face's on every document, and the 1x/10x memory figures are printed. Speed is reported by the
benchmark itself, never asserted here. Only the datasets peer runs here (litdata's optimize starts a worker that
imports torch: ~10 s of CPU the default suite does not spend; `trainkit bench prepare` runs it)."""

from __future__ import annotations

import json

import pytest

from trainkit.cli import main


@pytest.mark.benchmark
def test_bench_prepare_runs_and_every_peer_makes_the_same_tokens(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "prepare", "--max-chars", "40000", "--peers", "datasets-map", "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc["peers"]) == {"trainkit", "datasets-map"}
    tokens = {r["tokens"] for r in doc["peers"].values()}
    assert len(tokens) == 1 and tokens.pop() > 10_000
    assert doc["trainkit_10x"]["tokens"] == 10 * doc["peers"]["trainkit"]["tokens"]
    assert doc["tokenizers"]["identical_documents"] > 10
    printed = capsys.readouterr().out
    assert "trainkit / datasets-map per core:" in printed and "on 10x" in printed
