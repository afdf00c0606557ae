"""The trainer's hook: an eval as its own Ray task, with its task folder in object storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.checkpoints import tiny_checkpoint_dir, upload_checkpoint
from trainkit import storage
from trainkit.eval import launch_eval_task
from trainkit.spec.models import EvalSpec

pytestmark = pytest.mark.slow
TASKS = Path(__file__).resolve().parents[1] / "data" / "lm_eval_tasks"


def test_eval_runs_as_a_ray_task(ray_session, s3_bucket, s3_endpoint):
    ray = ray_session
    run = f"{s3_bucket}/runs/r1"
    ckpt = upload_checkpoint(tiny_checkpoint_dir(), f"{run}/checkpoints/step-00000030")
    storage.upload_dir(TASKS / "tk_winogrande", f"{s3_bucket}/tasks/winogrande-like")
    spec = EvalSpec.model_validate(
        {"tasks": [{"name": "tk_winogrande", "path": f"{s3_bucket}/tasks/winogrande-like", "limit": 4}], "batchSize": 2}
    )

    ref = launch_eval_task(ckpt, spec, run, 30, storage.StorageOptions(endpoint=s3_endpoint))
    assert isinstance(ref, ray.ObjectRef)
    ready, _ = ray.wait([ref], timeout=0)
    assert not ready  # returned at once; the eval runs in the background
    summary = ray.get(ref, timeout=300)

    written = storage.read_json(f"{run}/eval/step-00000030/summary.json")
    results = storage.read_json(f"{run}/eval/step-00000030/results.json")
    assert written == summary
    assert summary["tasks"]["tk_winogrande"] == results["results"]["tk_winogrande"]["acc,none"]
    assert results["n-samples"]["tk_winogrande"]["effective"] == 4
