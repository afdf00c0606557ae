"""`trainkit sweep --local`: a sweep's runs one after another on this machine, then the comparison.

The same runs the operator would create (`expand_sweep`), trained through the same code path as
`trainkit run` (preflight, Ray Train on a local Ray, eval at the end), so a sweep tried on a laptop
and one run on a cluster differ only in where they run. A run that already finished (its final
checkpoint and eval exist) is not trained again: re-running the command resumes the sweep.
"""

from __future__ import annotations

import os
import sys

from trainkit.spec import SpecError, TrainingRunSpec, derive_plan, parse_run
from trainkit.storage import StorageError, StorageOptions


def run_sweep_locally(sweep, runs: list[dict], report_uri: str | None = None, num_cpus: int | None = None) -> int:
    from trainkit.compare import CompareError, compare_runs
    from trainkit.train.launch import PreflightError, connect_ray, resolve_local_paths, run_spec

    parsed = []
    for manifest in runs:
        try:
            run = parse_run(manifest, manifest["metadata"]["name"])
        except SpecError as e:
            print(str(e), file=sys.stderr)
            return 1
        parsed.append((run.metadata.name, resolve_local_paths(run.spec, os.getcwd())))

    # Which runs are done already, read before Ray starts: unreachable storage fails here, in seconds.
    try:
        done = [_finished(spec, derive_plan(spec).total_steps) for _, spec in parsed]
    except (StorageError, PermissionError) as e:
        print(f"trainkit sweep: error: reading the runs' status: {e}", file=sys.stderr)
        return 1
    import ray  # only now: a sweep whose status cannot be read fails without loading Ray

    started = not ray.is_initialized()
    if not all(done):
        connect_ray(num_cpus, log_to_driver=False)
    outputs = []
    try:
        for i, ((name, spec), finished) in enumerate(zip(parsed, done)):
            plan = derive_plan(spec)
            weights = ", ".join(f"{s.name} {s.weight:.2f}" for s in spec.data.sources)
            outputs.append(spec.output.uri)
            if finished:
                print(f"[{i + 1}/{len(parsed)}] {name} ({weights}): already done", flush=True)
                continue
            print(
                f"[{i + 1}/{len(parsed)}] {name} ({weights}): {plan.total_steps} steps -> {spec.output.uri}", flush=True
            )
            try:
                run_spec(spec, name=name, max_failures=1)  # Ray is connected already: run_spec keeps it
            except PreflightError as e:
                print(f"{name}: {e}", file=sys.stderr)
                return 1
    finally:
        if started and ray.is_initialized():
            ray.shutdown()

    try:
        report = compare_runs(outputs, rank_by=sweep.spec.rank_by, output=report_uri)
    except (CompareError, StorageError, PermissionError) as e:
        print(f"comparison failed: {e}", file=sys.stderr)
        return 1
    print(report.text)
    return 0


def _finished(spec: TrainingRunSpec, total_steps: int) -> bool:
    """The run's final checkpoint is complete and, when it asks for one, its eval is committed."""
    from trainkit import artifacts
    from trainkit.train.launch import eval_at_end_requested

    options = StorageOptions.from_spec(spec.storage)
    if artifacts.latest_complete_checkpoint(spec.output.uri, options) != total_steps:
        return False
    return not eval_at_end_requested(spec) or artifacts.read_latest_eval_summary(spec.output.uri, options) is not None
