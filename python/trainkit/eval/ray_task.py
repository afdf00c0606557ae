"""Run an eval as its own Ray task, so training does not wait for it.

    ref = launch_eval_task(checkpoint_uri, spec.eval, spec.output.uri, step, StorageOptions.from_spec(spec.storage))
    ...                      # keep training
    summary = ray.get(ref)   # at the end, or poll with ray.wait([ref], timeout=0)

The task asks for one GPU when the cluster has GPUs (unless `num_gpus` says otherwise), else CPUs only.
"""

from __future__ import annotations

from trainkit.storage import StorageOptions


def _evaluate_remote(checkpoint_uri, eval_spec, output_uri, step, options, cache_dir):
    from trainkit.eval.runner import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint_uri, eval_spec, output_uri, step, options, cache_dir=cache_dir)


def launch_eval_task(
    checkpoint_uri: str,
    eval_spec,
    output_uri: str,
    step: int | None = None,
    options: StorageOptions | None = None,
    *,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    cache_dir: str | None = None,
):
    """Start `evaluate_checkpoint` as a Ray task; returns its ObjectRef (the summary dict when done; the
    ObjectRef raises the EvalError if the eval failed). Needs `ray.init()` (or a Ray Train worker)."""
    import ray

    if num_gpus is None:
        num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(_evaluate_remote)
    return remote.options(name=f"trainkit-eval-step-{step}").remote(
        checkpoint_uri, eval_spec, output_uri, step, options, cache_dir
    )
