"""The card-style table, the operator's summary and report.md, built from lm-eval's output. Pure.

Scores stay fractions (as lm-eval reports them) in the summary; the table shows percent like the card.
The average is the plain mean of the rows' headline scores (the card's convention); the baseline and
reference averages are taken only when every row has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainkit.eval.metrics import headline, metric_value, random_baseline
from trainkit.eval.suite import REFERENCE_NAME, SEED_SUITE_BY_NAME
from trainkit.untrusted_text import markdown_text


@dataclass(frozen=True)
class Row:
    task: str
    label: str
    num_fewshot: int | None
    metric: str  # the headline metric's name
    score: float  # headline, fraction
    acc: float | None
    acc_norm: float | None
    random: float | None  # percent
    reference: float | None  # percent
    samples: int | None

    @property
    def percent(self) -> float:
        return 100.0 * self.score


@dataclass(frozen=True)
class Table:
    step: int | None
    rows: tuple[Row, ...]
    average: float  # fraction
    random_average: float | None  # percent
    reference_average: float | None  # percent


def build_table(task_names: list[str], output: dict, step: int | None) -> Table:
    """One row per requested task (or group), from lm-eval's `simple_evaluate` output."""
    results = output.get("results", {})
    rows = []
    for name in task_names:
        if name not in results:
            raise ValueError(
                f"lm-eval returned no results for task {name!r} (got: {', '.join(sorted(results)) or 'none'})"
            )
        task_results = results[name]
        metric, score = headline(name, task_results)
        suite = SEED_SUITE_BY_NAME.get(name)
        rows.append(
            Row(
                task=name,
                label=suite.label if suite else name,
                num_fewshot=_fewshot(output, name),
                metric=metric,
                score=score,
                acc=metric_value(task_results, "acc"),
                acc_norm=metric_value(task_results, "acc_norm"),
                random=random_baseline(name, (output.get("samples") or {}).get(name)),
                reference=suite.reference if suite else None,
                samples=_samples(output, name),
            )
        )
    if not rows:
        raise ValueError("no tasks to report")
    return Table(
        step=step,
        rows=tuple(rows),
        average=sum(r.score for r in rows) / len(rows),
        random_average=_mean_if_all([r.random for r in rows]),
        reference_average=_mean_if_all([r.reference for r in rows]),
    )


def summary(table: Table, **extra) -> dict:
    """The small JSON the operator reads: {step, average, tasks: {task: headline}, metrics: {task: {acc, acc_norm}}}."""
    return {
        "step": table.step,
        "average": table.average,
        "tasks": {r.task: r.score for r in table.rows},
        "metrics": {r.task: {"acc": r.acc, "acc_norm": r.acc_norm} for r in table.rows},
        "headlineMetric": {r.task: r.metric for r in table.rows},
        "numFewshot": {r.task: r.num_fewshot for r in table.rows},
        "random": {r.task: r.random for r in table.rows},
        "samples": {r.task: r.samples for r in table.rows},
        **extra,
    }


def table_from_summary(s: dict) -> Table:
    """Rebuild a table from a summary.json (for `trainkit report`)."""
    rows = []
    for task, score in s["tasks"].items():
        suite = SEED_SUITE_BY_NAME.get(task)
        m = s.get("metrics", {}).get(task, {})
        rows.append(
            Row(
                task,
                suite.label if suite else task,
                s.get("numFewshot", {}).get(task),
                s.get("headlineMetric", {}).get(task, "acc"),
                score,
                m.get("acc"),
                m.get("acc_norm"),
                s.get("random", {}).get(task),
                suite.reference if suite else None,
                s.get("samples", {}).get(task),
            )
        )
    return Table(
        s.get("step"),
        tuple(rows),
        s["average"],
        _mean_if_all([r.random for r in rows]),
        _mean_if_all([r.reference for r in rows]),
    )


def markdown(table: Table, title: str | None = None) -> str:
    """The card's table (Task, Ours, Random, GPT-2, vs Random, vs GPT-2) plus metric, acc, acc_norm, n."""
    head = (
        f"| Task | Metric | Score | acc | acc_norm | Random | {REFERENCE_NAME} | vs Random | vs {REFERENCE_NAME} | n |"
    )
    lines = []
    if title:
        lines += [f"# {markdown_text(title)}", ""]
    lines += [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in table.rows:
        shots = "" if r.num_fewshot is None else f" ({r.num_fewshot}-shot)"
        lines.append(
            f"| {markdown_text(r.label)}{shots} | {markdown_text(r.metric)} | {_pct(r.score)} | {_pct(r.acc)} | {_pct(r.acc_norm)} | "
            f"{_p(r.random)} | {_p(r.reference)} | {_delta(r.percent, r.random)} | {_delta(r.percent, r.reference)} | "
            f"{'' if r.samples is None else r.samples} |"
        )
    avg = 100.0 * table.average
    lines.append(
        f"| **Average** | | {_p(avg)} | | | {_p(table.random_average)} | {_p(table.reference_average)} | "
        f"{_delta(avg, table.random_average)} | {_delta(avg, table.reference_average)} | |"
    )
    lines += [
        "",
        f"Scores in percent. Score = the leaderboard's metric per task (acc_norm for HellaSwag/ARC, MC2 for "
        f"TruthfulQA, acc otherwise); Average = plain mean of the Score column. {REFERENCE_NAME} = GPT-2 124M as "
        "the model card gives it; Random = random-guess baseline; deltas in percentage points.",
    ]
    return "\n".join(lines) + "\n"


def format_percent(fraction: float | None) -> str:
    """How the report prints a score (tests compare report cells with lm-eval's numbers through this)."""
    return _pct(fraction)


def _pct(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100.0 * fraction:.2f}"


def _p(percent: float | None) -> str:
    return "—" if percent is None else f"{percent:.2f}"


def _delta(ours: float, other: float | None) -> str:
    return "—" if other is None else f"{ours - other:+.2f}"


def _mean_if_all(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if values and len(present) == len(values) else None


def _fewshot(output: dict, name: str) -> int | None:
    """The task's few-shot count; for a group, its first subtask's (lm-eval records subtasks only)."""
    shots = output.get("n-shot") or {}
    for key in [name, *((output.get("group_subtasks") or {}).get(name) or [])]:
        v = shots.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _samples(output: dict, name: str) -> int | None:
    """Examples evaluated; for a group, the sum over its subtasks."""
    counts = output.get("n-samples") or {}
    if isinstance(counts.get(name), dict):
        return counts[name].get("effective")
    subtasks = (output.get("group_subtasks") or {}).get(name) or []
    found = [counts[t].get("effective") for t in subtasks if isinstance(counts.get(t), dict)]
    return sum(found) if found and None not in found else None
