"""`trainkit bench data` keeps working: a small run, every reader reads the same amount, ours stays
exact. Speed is reported by the benchmark itself, never asserted here."""

from __future__ import annotations

import json

import pytest

from trainkit.cli import main


@pytest.mark.benchmark
def test_bench_data_runs_and_reports_every_reader(tmp_path, ray_session, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "data", "--max-chars", "120000", "--sequences", "1200", "--repeats", "1",
                 "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"trainkit", "hf-datasets", "litdata"}
    assert {r["sequences"] for r in results.values()} == {1200}
    assert {r["tokens"] for r in results.values()} == {1200 * 1025}
    assert results["trainkit"]["mixture_error"] < 1.0
    assert "trainkit / hf-datasets" in capsys.readouterr().out
