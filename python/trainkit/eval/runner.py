"""evaluate_checkpoint: fetch -> resolve tasks -> lm-eval -> table -> files under the run's output URI.

Everything is computed in memory first; files are written only after the evaluation succeeded, each one
atomically, summary.json last (it is what the operator reads, so it marks the eval complete). Any error
before that point leaves no file behind.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainkit import artifacts
from trainkit import storage as store
from trainkit.artifacts import EVAL_REPORT, EVAL_RESULTS, EVAL_SUMMARY, EVAL_TASKS_PLOT, eval_dir
from trainkit.eval import harness, plots
from trainkit.eval.checkpoint import default_cache_dir, fetch_checkpoint
from trainkit.eval.errors import EvalError
from trainkit.eval.local_tasks import prepare_task_folder
from trainkit.eval.report import build_table, markdown, summary
from trainkit.eval.suite import TaskRequest, resolve_tasks

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint_uri: str,
    eval_spec,
    output_uri: str,
    step: int | None = None,
    options: store.StorageOptions | None = None,
    *,
    requests: list[TaskRequest] | None = None,
    cache_dir: str | Path | None = None,
    device: str | None = None,
) -> dict:
    """Evaluate the checkpoint at `checkpoint_uri` with the tasks of `eval_spec` (an EvalSpec), write
    results.json, report.md, plots and summary.json to `<output_uri>/eval/step-XXXXXXXX/`, and return the
    summary dict {step, average, tasks, metrics, ...}. `step` defaults to the checkpoint's own.
    `requests` replaces the spec's task list (the CLI's --tasks). Raises EvalError with a clear message."""
    started = time.time()
    requests = list(requests) if requests is not None else resolve_tasks(eval_spec)
    if not requests:
        raise EvalError("nothing to evaluate: eval.suite is 'none' and eval.tasks is empty")
    batch_size = getattr(eval_spec, "batch_size", 8) if eval_spec is not None else 8
    cache = Path(cache_dir) if cache_dir else default_cache_dir().parent

    ckpt = fetch_checkpoint(checkpoint_uri, cache / "checkpoints", options)
    step = ckpt.step if step is None else step

    with tempfile.TemporaryDirectory(prefix="tk-tasks-", dir=cache if cache.exists() else None) as tmp:
        folders = {r.path: prepare_task_folder(r.path, Path(tmp), options) for r in requests if r.path}
        manager = harness.task_manager(requests, list(folders.values()))
        harness.check_names(requests, manager)
        harness.preflight(requests, manager)
        model = harness.load_model(ckpt.path, batch_size, device)
        output = harness.evaluate(model, requests, manager)

    table = build_table([r.name for r in requests], output, step)
    result = summary(table, checkpoint=ckpt.uri, evalSeconds=round(time.time() - started, 1))
    out_dir = eval_dir(output_uri, step)
    # A bad old summary is passed over (and logged) by the reader: it must not waste this eval.
    history: list[Mapping[str, Any]] = [
        s for s in artifacts.read_eval_summaries(output_uri, options) if s.get("step") != step
    ] + [result]
    files = {
        EVAL_RESULTS: json_bytes(results_document(output)),
        EVAL_REPORT: markdown(table, title=f"Evaluation of {ckpt.uri} (step {step})").encode(),
        EVAL_TASKS_PLOT: plots.tasks_bar_chart(table),
    }
    write_eval_files(out_dir, files, result, options)
    if len(history) >= 2:
        # After the commit: a derived view over every eval, rewritten by each (and by `trainkit report`).
        store.write_bytes(artifacts.scores_by_step_uri(output_uri), plots.scores_by_step(history), options)
    return result


def write_eval_files(out_dir: str, files: dict[str, bytes], result: dict, options=None) -> None:
    """Each file atomically, summary.json last; if a write fails, remove what this call wrote."""
    written = []
    try:
        for name, data in files.items():
            store.write_bytes(store.join(out_dir, name), data, options)
            written.append(name)
        store.write_json(store.join(out_dir, EVAL_SUMMARY), result, options)  # last: marks the eval complete
    except BaseException:
        fs, root = store.filesystem(out_dir, options)
        for name in written:
            try:
                fs.rm_file(f"{root}/{name}")
            except Exception:  # noqa: BLE001 - best effort; the original error is what matters
                log.warning("could not remove %s/%s after a failed write", out_dir, name)
        raise


def results_document(output: dict) -> dict:
    """lm-eval's output as results.json: everything but the per-sample logs (large), made JSON-safe."""
    return {k: v for k, v in output.items() if k != "samples"}


def json_bytes(obj) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable).encode() + b"\n"


def _jsonable(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def file_uris(uri: str, options: store.StorageOptions | None = None) -> list[str]:
    """The files under `uri`, as URIs of the same scheme (a control read: guarded on S3)."""
    return [store.join(uri, rel) for rel in sorted(store.list_sizes(uri, options))]
