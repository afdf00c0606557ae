"""Ranking pinned as literal tables: competition ranks, direction per metric, ties by name, runs
without the metric (missing, NaN, infinite) last with the reason, and the metric names."""

from __future__ import annotations

import math

import pytest

from trainkit.compare import CompareError
from trainkit.compare.leaderboard import Metric, available_metrics, favoured, leaderboard, parse_metric
from trainkit.compare.results import RunResult
from trainkit.spec.ranking import higher_is_better, metric_value, rank_values
from trainkit.spec.sweep import valid_metric_name


def rr(
    name: str,
    *,
    loss: float | None = None,
    avg: float | None = None,
    tasks: dict[str, float] | None = None,
    uri: str | None = None,
) -> RunResult:
    return RunResult(
        uri=uri or f"s3://b/{name}",
        name=name,
        weights={"a": 1.0},
        final_loss=loss,
        eval_average=avg,
        eval_tasks=tasks or {},
    )


@pytest.mark.parametrize(
    "values,higher,ranks",
    [
        ([0.3, 0.5, 0.5, 0.1], True, [3, 1, 1, 4]),
        ([0.3, 0.5, 0.5, 0.1], False, [2, 3, 3, 1]),
        ([2.0, None, 1.0, 2.0], False, [2, None, 1, 2]),
        ([None, None], True, [None, None]),
        ([], True, []),
        ([7.0], False, [1]),
    ],
)
def test_competition_ranks(values, higher, ranks):
    assert rank_values(values, higher) == ranks


def test_metric_names_and_directions():
    assert [higher_is_better(m) for m in ("loss", "eval.average", "eval.piqa")] == [False, True, True]
    assert metric_value("loss", 3.0, 0.4, {"piqa": 0.6}) == 3.0
    assert metric_value("eval.average", 3.0, 0.4, {"piqa": 0.6}) == 0.4
    assert metric_value("eval.piqa", 3.0, 0.4, {"piqa": 0.6}) == 0.6
    assert metric_value("eval.mmlu", 3.0, 0.4, {"piqa": 0.6}) is None
    assert [valid_metric_name(m) for m in ("loss", "eval.average", "eval.arc_easy", "eval.", "accuracy")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_parse_metric_table():
    assert parse_metric("loss") == Metric("loss", "final training loss (diagnostic)", higher_is_better=False)
    assert parse_metric(" eval.average ") == Metric("eval.average", "eval average", higher_is_better=True)
    assert parse_metric("eval.piqa", [rr("x", tasks={"piqa": 0.5})]) == Metric("eval.piqa", "piqa", True)
    assert parse_metric("eval.piqa") == Metric("eval.piqa", "piqa", True)  # no results to check against
    with pytest.raises(
        CompareError,
        match=r"unknown metric 'eval.mmlu': no run reports eval task 'mmlu' "
        r"\(available: val.mean, eval.average, loss, eval.piqa\)",
    ):
        parse_metric("eval.mmlu", [rr("x", tasks={"piqa": 0.5})])
    with pytest.raises(
        CompareError,
        match=r"unknown metric 'eval.' \(use one of: val.mean, val.<source>, loss, eval.average, eval.<task>\)",
    ):
        parse_metric("eval.")
    with pytest.raises(CompareError, match=r"unknown metric 'acc' \(use one of: val.mean, eval.average, loss\)"):
        parse_metric("acc", [])


def test_available_metrics_lists_tasks_sorted():
    results = [rr("x", tasks={"piqa": 0.5, "arc": 0.2}), rr("y", tasks={"hellaswag": 0.3})]
    assert available_metrics(results) == ["val.mean", "eval.average", "loss", "eval.arc", "eval.hellaswag", "eval.piqa"]


def test_leaderboard_by_loss_lowest_first_with_ties_by_name():
    results = [rr("c", loss=3.1), rr("b", loss=2.9), rr("a", loss=3.1), rr("d", loss=None), rr("e", loss=math.nan)]
    rows = leaderboard(results, "loss")
    assert [(r.rank, r.run.name, r.value, r.tied, r.note) for r in rows] == [
        (1, "b", 2.9, False, ""),
        (2, "a", 3.1, True, "tied with c"),
        (2, "c", 3.1, True, "tied with a"),
        (None, "d", None, False, "not ranked: no final loss"),
        (None, "e", None, False, "not ranked: no final loss"),
    ]
    assert [r.run.name for r in favoured(rows)] == ["b"]


def test_leaderboard_by_eval_highest_first_and_why_missing():
    results = [
        rr("low", avg=0.3),
        rr("none"),
        rr("high", avg=0.5, tasks={"piqa": 0.7}),
        rr("inf", avg=math.inf),
        rr("tie", avg=0.5),
    ]
    rows = leaderboard(results)
    assert [(r.rank, r.run.name) for r in rows] == [(1, "high"), (1, "tie"), (3, "low"), (None, "inf"), (None, "none")]
    assert [r.run.name for r in favoured(rows)] == ["high", "tie"]
    assert rows[-1].note == "not ranked: no eval summary"
    by_task = leaderboard([rr("p", avg=0.1, tasks={"piqa": 0.2}), rr("q", avg=0.9, tasks={"arc": 0.9})], "eval.piqa")
    assert [(r.rank, r.run.name, r.note) for r in by_task] == [
        (1, "p", ""),
        (None, "q", "not ranked: eval has no task 'piqa'"),
    ]


def test_same_name_runs_are_ordered_by_uri_and_nothing_ranked_means_no_favourite():
    rows = leaderboard([rr("x", loss=1.0, uri="s3://b/2/x"), rr("x", loss=1.0, uri="s3://b/1/x")], "loss")
    assert [r.run.uri for r in rows] == ["s3://b/1/x", "s3://b/2/x"]
    assert favoured(leaderboard([rr("a"), rr("b")], "loss")) == []
