"""Ranking runs by one metric. Pure functions.

Metrics: `val.mean` and `val.<source>` (held-out validation loss, lower is better: the metric mixtures
are compared by), `loss` (final training loss: a diagnostic, each run measures it on different data),
`eval.average` and `eval.<task>` (higher is better). Ties share a rank (competition ranking: 1, 2, 2, 4) and are listed by name. Runs without
the metric are listed last with rank None and a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainkit.compare.results import CompareError, RunResult
from trainkit.spec.ranking import VALIDATION_MEAN, metric_value, rank_values

DEFAULT_METRIC = "eval.average"


@dataclass(frozen=True)
class Metric:
    key: str  # as the user wrote it: "loss", "eval.average", "eval.hellaswag"
    label: str  # for tables and plots
    higher_is_better: bool

    def value(self, r: RunResult) -> float | None:
        return metric_value(self.key, r.final_loss, r.eval_average, r.eval_tasks, r.validation, r.validation_mean)

    def why_missing(self, r: RunResult) -> str:
        if self.key == "loss":
            return "no final loss"
        if self.key.startswith("val."):
            if not r.validation:
                return "no validation loss (validation.jsonl; prepare the sources again for a held-out split)"
            return f"no validation loss for source {self.key[len('val.') :]!r}"
        if not r.has_eval:
            return "no eval summary"
        return f"eval has no task {self.key[len('eval.') :]!r}"


def available_metrics(results: list[RunResult]) -> list[str]:
    tasks = sorted({t for r in results for t in r.eval_tasks})
    sources = sorted({s for r in results for s in r.validation})
    return ["val.mean", "eval.average", "loss"] + [f"val.{s}" for s in sources] + [f"eval.{t}" for t in tasks]


def parse_metric(key: str, results: list[RunResult] | None = None) -> Metric:
    """The metric named `key`; CompareError naming it when it is unknown (for `eval.<task>`: when
    `results` are given and no run reports that task)."""
    key = (key or "").strip()
    if key == "loss":
        return Metric("loss", "final training loss (diagnostic)", higher_is_better=False)
    if key == VALIDATION_MEAN:
        return Metric(key, "validation loss (mean over sources)", higher_is_better=False)
    if key.startswith("val.") and len(key) > len("val."):
        source = key[len("val.") :]
        if results is not None and not any(source in r.validation for r in results):
            known = ", ".join(available_metrics(results))
            raise CompareError(
                f"unknown metric {key!r}: no run reports validation loss of {source!r} (available: {known})"
            )
        return Metric(key, f"validation loss {source}", higher_is_better=False)
    if key == "eval.average":
        return Metric("eval.average", "eval average", higher_is_better=True)
    if key.startswith("eval.") and len(key) > len("eval."):
        task = key[len("eval.") :]
        if results is not None and not any(task in r.eval_tasks for r in results):
            known = ", ".join(available_metrics(results))
            raise CompareError(f"unknown metric {key!r}: no run reports eval task {task!r} (available: {known})")
        return Metric(key, task, higher_is_better=True)
    known = (
        ", ".join(available_metrics(results))
        if results is not None
        else "val.mean, val.<source>, loss, eval.average, eval.<task>"
    )
    raise CompareError(f"unknown metric {key!r} (use one of: {known})")


@dataclass(frozen=True)
class Row:
    rank: int | None  # None: not ranked (metric missing)
    run: RunResult
    value: float | None
    tied: bool = False
    note: str = ""  # why the run is unranked, or "tied with ..."


def leaderboard(results: list[RunResult], rank_by: str = DEFAULT_METRIC) -> list[Row]:
    """Rows in rank order: best first, ties share a rank, runs without the metric last (rank None)."""
    metric = parse_metric(rank_by, results)
    values = [metric.value(r) for r in results]
    ranks = rank_values(values, metric.higher_is_better)  # the same rule as a sweep's status leaderboard
    order = sorted(
        range(len(results)), key=lambda i: (ranks[i] is None, ranks[i] or 0, results[i].name, results[i].uri)
    )
    rows: list[Row] = []
    for i in order:
        r = results[i]
        if ranks[i] is None:
            rows.append(Row(rank=None, run=r, value=None, note=f"not ranked: {metric.why_missing(r)}"))
            continue
        others = [results[k].name for k in order if k != i and ranks[k] == ranks[i]]
        rows.append(
            Row(
                rank=ranks[i],
                run=r,
                value=values[i],
                tied=bool(others),
                note=f"tied with {', '.join(others)}" if others else "",
            )
        )
    return rows


def favoured(rows: list[Row]) -> list[Row]:
    """The rank-1 row(s): more than one when the best value is tied; [] when nothing is ranked."""
    return [r for r in rows if r.rank == 1]
