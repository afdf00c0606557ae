"""The one ranking rule, shared by a sweep's status leaderboard (operator) and `trainkit compare`:
which value a metric takes for a run, which direction is better, and competition ranks."""

from __future__ import annotations

import math


MEAN_NAME = "mean"  # validation.jsonl's key for the mean, so no source or target may be called this
VALIDATION_MEAN = f"val.{MEAN_NAME}"  # held-out loss, every source counted once


def metric_value(
    metric: str,
    loss: float | None,
    eval_average: float | None,
    eval_tasks: dict[str, float],
    validation: dict[str, float] | None = None,
    validation_mean: float | None = None,
) -> float | None:
    """The value a run is ranked by; None when the run does not have it (yet), or it is NaN or infinite
    (a diverged run has no rank rather than the best or worst one). `val.mean` and `val.<source>`: the
    held-out validation loss (comparable across mixtures: every run measures it on the same tokens)."""
    if metric == "loss":
        v = loss
    elif metric == VALIDATION_MEAN:
        v = validation_mean
    elif metric.startswith("val."):
        v = (validation or {}).get(metric[len("val.") :])
    elif metric == "eval.average":
        v = eval_average
    else:
        v = eval_tasks.get(metric[len("eval.") :])
    return v if v is not None and math.isfinite(v) else None


def higher_is_better(metric: str) -> bool:
    return metric != "loss" and not metric.startswith("val.")


def rank_values(values: list[float | None], higher_is_better: bool) -> list[int | None]:
    """Competition ranks (1, 2, 2, 4) of `values`; runs without a value get no rank."""
    present = sorted((v for v in values if v is not None), reverse=higher_is_better)
    first_rank: dict[float, int] = {}
    for i, v in enumerate(present):
        first_rank.setdefault(v, i + 1)
    return [None if v is None else first_rank[v] for v in values]


def rank_among(value: float | None, others: list[float | None], higher_is_better: bool) -> int | None:
    """Where `value` would rank among `others` (competition rank: 1 + how many are strictly better), e.g. a
    sweep's confirmation run among its proxies."""
    if value is None or not math.isfinite(value):
        return None
    better = [v for v in others if v is not None and (v > value if higher_is_better else v < value)]
    return 1 + len(better)
