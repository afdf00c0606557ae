"""Reading scores out of lm-eval's results dict, and the leaderboard's metric convention. Pure functions.

lm-eval keys a task's metrics as "<metric>,<filter>" (e.g. "acc,none", "acc_norm,none"); scores are
fractions in [0, 1]. Convention (Open LLM Leaderboard v1): acc_norm for HellaSwag and ARC, the MC2
score (which lm-eval reports as `acc`) for TruthfulQA MC2, acc for MMLU, PIQA and WinoGrande.
"""

from __future__ import annotations

from trainkit.eval.suite import SEED_SUITE_BY_NAME

# Task families whose headline is acc_norm (beyond the seed suite's own table).
ACC_NORM_FAMILIES = ("hellaswag", "arc_challenge", "arc_easy")


def family(task: str) -> str | None:
    """The seed-suite task a name belongs to: itself, or a same-shaped mirror named `<prefix>_<task>`
    (e.g. a local `tk_hellaswag`). None for anything else."""
    for name in list(SEED_SUITE_BY_NAME) + list(ACC_NORM_FAMILIES):
        if task == name or task.endswith("_" + name):
            return name
    return None


def preferred_metric(task: str) -> str:
    fam = family(task)
    if fam in SEED_SUITE_BY_NAME:
        return SEED_SUITE_BY_NAME[fam].metric
    return "acc_norm" if fam in ACC_NORM_FAMILIES else "acc"


def metric_value(task_results: dict, metric: str) -> float | None:
    """`metric` from one task's lm-eval results ("acc,none" first, then any other filter)."""
    if f"{metric},none" in task_results:
        return _number(task_results[f"{metric},none"])
    for key, value in task_results.items():
        if key.startswith(metric + ",") and "_stderr" not in key:
            return _number(value)
    return _number(task_results[metric]) if metric in task_results else None


def scalar_metrics(task_results: dict) -> dict[str, float]:
    """Every numeric metric of one task, keyed by bare metric name (stderr excluded)."""
    out: dict[str, float] = {}
    for key, value in task_results.items():
        name = key.split(",", 1)[0]
        if name.endswith("_stderr") or name in out or name == "alias":
            continue
        v = _number(value)
        if v is not None:
            out[name] = v
    return out


def headline(task: str, task_results: dict) -> tuple[str, float]:
    """(metric name, score) of the headline: the convention's metric, else acc, else acc_norm, else the
    first numeric metric. Raises ValueError when the task reported no number at all."""
    available = scalar_metrics(task_results)
    for metric in (preferred_metric(task), "acc", "acc_norm"):
        if metric in available:
            return metric, available[metric]
    if available:
        name = next(iter(available))
        return name, available[name]
    raise ValueError(f"lm-eval reported no numeric metric for task {task!r}")


def random_baseline(task: str, samples: list[dict] | None) -> float | None:
    """Random-guess accuracy in percent: the card's figure for a seed-suite family, else the mean of
    1/choices over the evaluated multiple-choice samples, else None."""
    fam = family(task)
    if fam in SEED_SUITE_BY_NAME:
        return SEED_SUITE_BY_NAME[fam].random
    if samples:
        counts = [len(s.get("arguments") or []) for s in samples]
        if all(c >= 2 for c in counts):
            return 100.0 * sum(1.0 / c for c in counts) / len(counts)
    return None


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
