"""`trainkit bench data` keeps working: a small run, every reader reads the same amount, ours stays
exact, and the per-rank traffic table at W = 8 covers every reader. Speed is reported by the benchmark
itself, never asserted here."""

from __future__ import annotations

import json

import pytest

from trainkit.cli import main


@pytest.mark.benchmark
def test_bench_data_runs_and_reports_every_reader(tmp_path, ray_session, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(["bench", "data", "--max-chars", "120000", "--sequences", "1200", "--repeats", "1", "--json", str(out)])
        == 0
    )
    doc = json.loads(out.read_text())
    results = doc["results"]
    assert set(results) == {"trainkit", "raw-s3fs", "hf-datasets", "litdata"}
    assert {r["sequences"] for r in results.values()} == {1200}
    assert {r["tokens"] for r in results.values()} == {1200 * 1025}
    assert results["trainkit"]["mixture_error"] < 1.0
    printed = capsys.readouterr().out
    assert "/ hf-datasets" in printed and "/ litdata" in printed and "per-rank traffic at W = 8" in printed
    assert "mosaicml-streaming: not measured in this run" in printed
    assert all(
        set(r["trainkit_over_this"]) == {"open_to_end", "steady", "per_cpu_second"}
        for r in results.values()
        if r is not results["trainkit"]
    )
    traffic = doc["traffic"]["readers"]
    assert set(traffic) == set(results) and doc["traffic"]["world_size"] == 8
    ours = traffic["trainkit"]
    # Every rank hands out exactly its eighth; what it fetches is its share plus its look-ahead.
    assert ours["consumed"] == [1200 // 8 * 1025 * 2] * 8
    assert all(c <= f for f, c in zip(ours["fetched"], ours["consumed"]))
