"""Leaderboard ranking and run-result parsing: pure functions, no I/O."""

from __future__ import annotations

import json

import pytest

from trainkit.compare import CompareError, leaderboard, parse_metric, run_result_from
from trainkit.compare.leaderboard import favoured
from trainkit.artifacts import parse_metrics


def spec(weights: dict[str, float], total_tokens=204800, gb=8, seq=128) -> dict:
    return {
        "data": {
            "seqLength": seq,
            "totalTokens": total_tokens,
            "sources": [{"name": n, "uri": f"s3://b/{n}", "weight": w} for n, w in weights.items()],
        },
        "training": {"microBatchSize": gb, "globalBatchSize": gb},
        "output": {"uri": "s3://b/runs/x"},
    }


def metrics(*pairs) -> str:
    return "".join(json.dumps({"step": s, "loss": l, "lr": 1e-3}) + "\n" for s, l in pairs)


def summary(avg, step=200, **tasks):
    return {"step": step, "average": avg, "tasks": tasks, "metrics": {}}


def run(name, avg=None, loss=3.0, finished=True, tasks=None, weights=None):
    progress = {"step": 200 if finished else 50, "totalSteps": 200, "loss": loss, "tokens": 204800}
    ev = summary(avg, **(tasks or {})) if avg is not None or tasks else None
    return run_result_from(
        f"s3://b/sweep/{name}",
        spec(weights or {"a": 1, "b": 1}),
        progress,
        metrics((10, 9.0), (200 if finished else 50, loss)),
        ev,
    )


# ------------------------------------------------------------------------------------ parsing
def test_weights_are_normalised_in_spec_order():
    r = run_result_from("s3://b/r1", spec({"web": 3, "edu": 1}))
    assert list(r.weights) == ["web", "edu"] and r.weights == {"web": 0.75, "edu": 0.25}
    assert r.name == "r1"


def test_name_comes_from_a_wrapped_trainingrun_document():
    doc = {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "mix-7"},
        "spec": spec({"a": 1}),
    }
    assert run_result_from("s3://b/whatever", doc).name == "mix-7"


@pytest.mark.parametrize("sources", [[], [{"name": "a", "weight": 0}], [{"name": "a"}], [{"name": "a", "weight": -1}]])
def test_unusable_weights_are_an_error_naming_the_run(sources):
    doc = {"data": {"sources": sources}}
    with pytest.raises(CompareError, match=r"s3://b/bad/spec.json"):
        run_result_from("s3://b/bad", doc)


def test_final_loss_is_the_last_metrics_line_else_progress():
    r = run_result_from(
        "u", spec({"a": 1}), {"step": 200, "totalSteps": 200, "loss": 9.9}, metrics((20, 4.0), (10, 5.0), (200, 3.1))
    )
    assert r.final_loss == 3.1 and r.loss_from == "metrics.jsonl"
    assert r.loss_curve == ((10, 5.0), (20, 4.0), (200, 3.1))
    r = run_result_from("u", spec({"a": 1}), {"step": 200, "totalSteps": 200, "loss": 2.5})
    assert r.final_loss == 2.5 and r.loss_from == "progress.json"


def test_repeated_steps_keep_the_last_line_and_bad_lines_are_flagged():
    lines, bad = parse_metrics('{"step": 10, "loss": 5}\nnot json\n{"step": 10, "loss": 4}\n{"loss": 1}\n')
    assert lines == [{"step": 10, "loss": 4}] and bad == 2


def test_finished_from_progress_or_plan_and_flags_for_missing_eval():
    done = run_result_from("u", spec({"a": 1}), None, metrics((200, 3.0)))  # plan: 204800 / (8*128) = 200 steps
    assert done.finished and done.total_steps == 200 and done.tokens == 200 * 8 * 128
    assert "no eval summary" in done.notes and not done.has_eval
    running = run_result_from("u", spec({"a": 1}), {"step": 50, "totalSteps": 200, "loss": 4.0})
    assert not running.finished and running.status == "running 50/200"
    assert any("not finished: step 50/200" in n for n in running.notes)


def test_eval_summary_is_read_and_missing_average_is_computed():
    r = run_result_from("u", spec({"a": 1}), None, None, {"step": 200, "tasks": {"x": 30.0, "y": 50.0}})
    assert r.eval_average == 40.0 and r.eval_tasks == {"x": 30.0, "y": 50.0}
    assert any("computed" in n for n in r.notes)


# --------------------------------------------------------------------------------- leaderboard
def test_eval_average_ranks_higher_first_and_missing_last_with_reason():
    rows = leaderboard([run("low", 30.0), run("none"), run("high", 40.0), run("mid", 35.0)], "eval.average")
    assert [(r.rank, r.run.name) for r in rows] == [(1, "high"), (2, "mid"), (3, "low"), (None, "none")]
    assert rows[-1].note == "not ranked: no eval summary" and rows[-1].value is None
    assert [r.run.name for r in favoured(rows)] == ["high"]


def test_loss_ranks_lower_first():
    rows = leaderboard([run("a", loss=3.2), run("b", loss=2.9), run("c", loss=3.0)], "loss")
    assert [r.run.name for r in rows] == ["b", "c", "a"] and [r.rank for r in rows] == [1, 2, 3]


def test_ties_share_a_rank_and_say_so():
    rows = leaderboard([run("z", 40.0), run("y", 40.0), run("x", 30.0), run("w", 41.0)], "eval.average")
    assert [(r.rank, r.run.name, r.tied) for r in rows] == [
        (1, "w", False),
        (2, "y", True),
        (2, "z", True),
        (4, "x", False),
    ]
    assert rows[1].note == "tied with z"
    tie_top = leaderboard([run("p", 40.0), run("q", 40.0)], "eval.average")
    assert [r.run.name for r in favoured(tie_top)] == ["p", "q"]


def test_per_task_metric_and_runs_missing_that_task():
    rows = leaderboard(
        [
            run("a", 35.0, tasks={"piqa": 55.0}),
            run("b", 36.0, tasks={"piqa": 60.0}),
            run("c", 37.0, tasks={"mmlu": 25.0}),
        ],
        "eval.piqa",
    )
    assert [(r.rank, r.run.name) for r in rows] == [(1, "b"), (2, "a"), (None, "c")]
    assert rows[-1].note == "not ranked: eval has no task 'piqa'"


def test_nan_metric_is_unranked_not_first():
    rows = leaderboard([run("nan", loss=float("nan")), run("ok", loss=3.0)], "loss")
    assert [(r.rank, r.run.name) for r in rows] == [(1, "ok"), (None, "nan")]


@pytest.mark.parametrize("key", ["accuracy", "eval.", "Loss", "", "eval.nosuch"])
def test_unknown_metric_is_an_error_naming_it(key):
    results = [run("a", 30.0, tasks={"piqa": 50.0})]
    with pytest.raises(CompareError, match=f"unknown metric {key!r}"):
        leaderboard(results, key)


def test_metric_directions():
    assert parse_metric("loss").higher_is_better is False
    assert parse_metric("eval.average").higher_is_better is True
    assert parse_metric("eval.hellaswag").higher_is_better is True
