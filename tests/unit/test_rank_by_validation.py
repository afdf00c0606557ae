"""Ranking by held-out validation loss (`val.mean`, `val.<source>`): the run result reads validation.jsonl's
last line, the leaderboard ranks lowest first, and a sweep accepts only metrics its runs measure."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from trainkit.artifacts import parse_validation
from trainkit.compare import CompareError, leaderboard, parse_metric, run_result_from
from trainkit.spec.sweep import TrainingSweep

REPO = Path(__file__).resolve().parents[2]


def spec(weights: dict[str, float]) -> dict:
    return {
        "data": {
            "seqLength": 128,
            "totalTokens": 204800,
            "sources": [{"name": n, "uri": f"s3://b/{n}", "weight": w} for n, w in weights.items()],
        },
        "training": {"microBatchSize": 8, "globalBatchSize": 8},
        "output": {"uri": "s3://b/runs/x"},
    }


def run(name: str, train_loss: float, val: dict[str, float] | None, step: int = 200):
    progress = {"step": 200, "totalSteps": 200, "loss": train_loss, "tokens": 204800, "finished": True}
    lines = None
    if val is not None:
        early = {"step": 100, "sources": {k: {"loss": 9.0, "tokens": 64} for k in val}, "mean": 9.0}
        last = {
            "step": step,
            "sources": {k: {"loss": v, "tokens": 64} for k, v in val.items()},
            "mean": sum(val.values()) / len(val),
        }
        lines, bad = parse_validation(json.dumps(early) + "\n" + json.dumps(last) + "\n")
        assert bad == 0
    return run_result_from(f"s3://b/sweep/{name}", spec({"a": 1, "b": 1}), progress, None, None, lines)


def test_val_mean_ranks_lowest_held_out_loss_first_not_training_loss():
    runs = [
        run("low-train-loss", 1.0, {"a": 4.0, "b": 4.4}),  # lowest training loss, worst held-out loss
        run("best", 3.0, {"a": 3.0, "b": 3.2}),
        run("middle", 2.0, {"a": 3.5, "b": 3.1}),
        run("unmeasured", 0.5, None),
    ]
    rows = leaderboard(runs, "val.mean")
    assert [(r.run.name, r.rank) for r in rows] == [
        ("best", 1),
        ("middle", 2),
        ("low-train-loss", 3),
        ("unmeasured", None),
    ]
    assert rows[0].value == pytest.approx(3.1)
    assert "no validation loss" in rows[-1].note
    assert [r.run.name for r in leaderboard(runs, "val.b")][:3] == ["middle", "best", "low-train-loss"]
    assert [r.run.name for r in leaderboard(runs, "loss")][0] == "unmeasured"  # the diagnostic still works
    assert not parse_metric("val.mean").higher_is_better and "diagnostic" in parse_metric("loss").label


def test_validation_from_an_earlier_step_is_flagged_and_unknown_sources_named():
    r = run("stale", 3.0, {"a": 3.0, "b": 3.0}, step=150)
    assert r.validation_step == 150 and any("validation loss is from step 150" in n for n in r.notes)
    with pytest.raises(CompareError, match="no run reports validation loss of 'zzz'"):
        leaderboard([r], "val.zzz")


def quickstart_sweep() -> dict:
    return yaml.safe_load((REPO / "jobs" / "sweep-quickstart.yaml").read_text())


def test_quickstart_sweep_ranks_by_validation_loss_and_bad_rank_by_is_named():
    doc = quickstart_sweep()
    assert TrainingSweep.model_validate(doc).spec.rank_by == "val.mean"
    assert TrainingSweep.model_validate({**doc, "spec": {**doc["spec"], "rankBy": "val.web"}})
    bad = copy.deepcopy(doc)
    bad["spec"]["rankBy"] = "val.wiki"
    with pytest.raises(ValueError, match="rankBy val.wiki: unknown source; the template has manuals, web, edu"):
        TrainingSweep.model_validate(bad)
    off = copy.deepcopy(doc)
    off["spec"]["template"]["eval"]["validationTokens"] = 0
    with pytest.raises(ValueError, match="measures no validation loss"):
        TrainingSweep.model_validate(off)


def test_the_report_shows_the_held_out_loss_it_ranks_by():
    from trainkit.compare import build_report
    from trainkit.compare.report import REPORT_HTML, REPORT_MD

    runs = [run("a-run", 1.0, {"a": 4.0, "b": 4.4}), run("b-run", 3.0, {"a": 3.0, "b": 3.2})]
    report = build_report(runs, "val.mean")
    md = report.files[REPORT_MD].decode()
    assert "| rank | run | weights | val.mean | final loss |" in md
    assert "| 1 | b-run | a 0.50 / b 0.50 | 3.100 | 3.000 |" in md  # a loss is never shown as a percent
    assert '<td class="num">3.100</td>' in report.files[REPORT_HTML].decode()
    assert "| rank | run | weights | final loss |" in build_report(runs, "loss").files[REPORT_MD].decode()
