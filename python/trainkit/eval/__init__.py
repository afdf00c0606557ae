"""Evaluation with lm-evaluation-harness: checkpoints in object storage -> eval/step-XXXXXXXX/ reports.

Public API (imports stay light; lm-eval and torch load when an eval runs):
    evaluate_checkpoint(checkpoint_uri, eval_spec, output_uri, step=None, options=None) -> summary dict
    launch_eval_task(checkpoint_uri, eval_spec, output_uri, step=None, options=None) -> ray.ObjectRef
"""

from trainkit.eval.errors import CheckpointError, EvalError, TaskDataError
from trainkit.eval.ray_task import launch_eval_task
from trainkit.eval.runner import evaluate_checkpoint
from trainkit.eval.suite import SEED_SUITE, TaskRequest, resolve_tasks

__all__ = [
    "CheckpointError",
    "EvalError",
    "TaskDataError",
    "SEED_SUITE",
    "TaskRequest",
    "evaluate_checkpoint",
    "launch_eval_task",
    "resolve_tasks",
]
