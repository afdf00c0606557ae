"""The thin shell around lm-evaluation-harness: task lookup, a data pre-flight, `simple_evaluate`.

Task data is loaded once per task *before* the model, so a task whose data cannot be reached (the
Hugging Face hub while offline, a wrong local path) fails at once with the task's name, and no model
time is spent. lm-eval takes one `limit` per call, so tasks with different limits run as separate
calls on the same loaded model (likewise per few-shot count); their outputs are merged key by key.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from trainkit.eval.errors import TaskDataError
from trainkit.eval.suite import TaskRequest, group_into_calls

log = logging.getLogger(__name__)

# Sections of simple_evaluate's output that are {task: ...} and merge by key.
_PER_TASK_SECTIONS = (
    "results",
    "groups",
    "group_subtasks",
    "configs",
    "versions",
    "n-shot",
    "higher_is_better",
    "n-samples",
    "samples",
)


def task_manager(requests: list[TaskRequest], include_paths: list[Path]):
    """lm-eval's TaskManager over the local task folders alone when they hold every requested name
    (indexing is then ~0.05 s), else over the built-in tasks too (~5 s)."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_paths]
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if all(r.name in set(local.all_tasks) for r in requests):
            return local
        return TaskManager(include_path=paths, include_defaults=True)
    return _builtin_task_manager()


@functools.lru_cache(maxsize=1)
def _builtin_task_manager():
    """The index of lm-eval's own tasks, built once per process (evals every N steps reuse it)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=True)


def check_names(requests: list[TaskRequest], manager) -> None:
    known = set(manager.all_tasks)
    unknown = [r.name for r in requests if r.name not in known]
    if unknown:
        import difflib

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=3)
            hints.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise TaskDataError(
            f"unknown lm-eval task(s): {', '.join(hints)}; give a task name lm-eval knows or a folder of task YAMLs (tasks[].path)"
        )


def preflight(requests: list[TaskRequest], manager) -> None:
    """Build every task (which loads its data) and fail fast, naming the task, when that is impossible."""
    for r in requests:
        try:
            manager.load([r.name])
        except Exception as e:  # any failure here means the data is out of reach (re-raised with the task named)
            raise TaskDataError(_unreachable_message(r.name, e)) from e


def _unreachable_message(task: str, e: Exception) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    offline = "Offline" in text or "offline" in text
    hint = (
        "the Hugging Face hub is switched off here (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); run where the hub is "
        "reachable, or pre-fill HF_DATASETS_CACHE, or use a local task folder"
        if offline
        else "check the task's dataset_path / data_files and network access to its source"
    )
    return f"benchmark data for task {task!r} cannot be reached: {text.splitlines()[0][:300]}; {hint}"


def load_model(model_path: Path, batch_size: int, device: str | None = None):
    """lm-eval's `hf` model on a local Hugging Face folder (float32: every run is scored the same way)."""
    import torch
    from lm_eval.models.huggingface import HFLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return HFLM(pretrained=str(model_path), batch_size=batch_size, device=device, dtype="float32")


def evaluate(model, requests: list[TaskRequest], manager) -> dict:
    """Run `simple_evaluate` (one call per distinct limit and few-shot count) and merge the outputs."""
    from lm_eval import evaluator

    outputs = []
    for limit, shots, group in group_into_calls(requests):
        out = evaluator.simple_evaluate(
            model=model,
            tasks=[r.name for r in group],
            num_fewshot=shots,
            limit=limit,
            task_manager=manager,
            log_samples=True,
        )
        if out is None:
            raise RuntimeError("lm-eval returned no results (non-zero rank?)")
        out["trainkit_call"] = {"tasks": [r.name for r in group], "limit": limit, "num_fewshot": shots}
        outputs.append(out)
    return merge_outputs(outputs)


def merge_outputs(outputs: list[dict]) -> dict:
    """One output from several simple_evaluate outputs: per-task sections merged, the rest from the first (pure)."""
    merged = {k: v for k, v in outputs[0].items() if k not in _PER_TASK_SECTIONS and k != "trainkit_call"}
    for section in _PER_TASK_SECTIONS:
        combined: dict = {}
        for out in outputs:
            combined.update(out.get(section) or {})
        if combined or any(section in out for out in outputs):
            merged[section] = combined
    merged["trainkit_calls"] = [out.get("trainkit_call") for out in outputs]
    return merged
