"""Which tasks an eval runs: the `seed-suite` preset (a pure table) and the spec's own tasks.

The seed suite is the model card's table ("GPT-2 70M - Optimal Dataset Mixing"): lm-eval task names,
few-shot counts, the leaderboard's headline metric, the random-guess baseline and the GPT-2 (124M)
column exactly as the card gives them (percent).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SuiteTask:
    name: str  # lm-eval task or group name
    label: str  # how the card names it
    num_fewshot: int
    metric: str  # headline metric (leaderboard convention)
    random: float  # random-guess baseline, percent (as the card gives it)
    reference: float  # GPT-2 124M, percent (as the card gives it)


SEED_SUITE: tuple[SuiteTask, ...] = (
    SuiteTask("mmlu", "MMLU", 5, "acc", 25.0, 26.0),
    SuiteTask("hellaswag", "HellaSwag", 0, "acc_norm", 25.0, 30.0),
    SuiteTask("arc_challenge", "ARC-Challenge", 0, "acc_norm", 25.0, 24.0),
    SuiteTask("piqa", "PIQA", 0, "acc", 50.0, 63.0),
    SuiteTask("winogrande", "WinoGrande", 0, "acc", 50.0, 51.0),
    SuiteTask("truthfulqa_mc2", "TruthfulQA MC2", 0, "acc", 25.0, 40.0),
)
SEED_SUITE_BY_NAME = {t.name: t for t in SEED_SUITE}
REFERENCE_NAME = "GPT-2"


@dataclass(frozen=True)
class TaskRequest:
    """One task to run: an lm-eval task/group name, its few-shot count, limit and local task folder."""

    name: str
    num_fewshot: int | None = None  # None: the task's own default
    limit: float | None = None  # examples per task: a count (>= 1) or a fraction (< 1)
    path: str | None = None  # folder (local or s3://) of lm-eval task YAMLs


def seed_suite_requests(limit: float | None = None) -> list[TaskRequest]:
    return [TaskRequest(t.name, t.num_fewshot, limit) for t in SEED_SUITE]


def resolve_tasks(eval_spec) -> list[TaskRequest]:
    """The tasks of an EvalSpec: the seed suite (when `suite: seed-suite`) then `tasks`; a task named
    in both takes the spec's settings (few-shot, limit) over the preset's, keeping the preset's order."""
    out: dict[str, TaskRequest] = {}
    if eval_spec.suite == "seed-suite":
        for r in seed_suite_requests():
            out[r.name] = r
    for t in eval_spec.tasks:
        base = out.get(t.name)
        fewshot = t.num_fewshot if t.num_fewshot is not None else (base.num_fewshot if base else None)
        out[t.name] = TaskRequest(t.name, fewshot, t.limit, t.path)
    return list(out.values())


def parse_task_arg(text: str) -> TaskRequest:
    """`NAME` or `NAME:FEWSHOT` from the command line; `seed-suite` is expanded by the caller."""
    name, _, shots = text.partition(":")
    if not name:
        raise ValueError(f"empty task name in --tasks {text!r}")
    if shots and not shots.isdigit():
        raise ValueError(f"few-shot count in --tasks {text!r} must be a whole number")
    return TaskRequest(name, int(shots) if shots else None)


def group_into_calls(requests: list[TaskRequest]) -> list[tuple[float | None, int | None, list[TaskRequest]]]:
    """lm-eval takes one `limit` and one `num_fewshot` per `simple_evaluate` call: split the requests into
    calls (limit, num_fewshot, requests), in first-seen order."""
    groups: dict[tuple[float | None, int | None], list[TaskRequest]] = {}
    for r in requests:
        groups.setdefault((r.limit, r.num_fewshot), []).append(r)
    return [(limit, shots, rs) for (limit, shots), rs in groups.items()]
