"""One run's results, read from its output URI (the object-store contract in docs/architecture.md).

`run_result_from(...)` is pure: it turns the already-read documents into a `RunResult`.
`load_run_results(run_uri)` and `discover_runs(uri)` are the thin I/O shells around it.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from trainkit import artifacts, storage
from trainkit.artifacts import (
    METRICS,
    PROGRESS,
    SPEC,
    VALIDATION,
    EvalSummaryDoc,
    ProgressDoc,
    ValidationLine,
    parse_metrics,
)
from trainkit.storage import StorageOptions


class CompareError(ValueError):
    """Input that cannot be compared (no runs, a run without spec.json, an unknown metric...).
    The message names the URI or metric at fault."""


@dataclass(frozen=True)
class RunResult:
    uri: str
    name: str
    weights: dict[str, float]  # normalised token proportions, in spec order
    final_loss: float | None = None
    loss_from: str | None = None  # "metrics.jsonl" | "progress.json" | None
    loss_curve: tuple[tuple[int, float], ...] = ()
    step: int | None = None
    total_steps: int | None = None
    tokens: int | None = None
    finished: bool = False
    eval_step: int | None = None
    eval_average: float | None = None
    eval_tasks: dict[str, float] = field(default_factory=dict)
    source_sequences: dict[str, int] = field(default_factory=dict)  # observed, from the last metrics line
    validation_step: int | None = None
    validation: dict[str, float] = field(default_factory=dict)  # held-out loss per source, at validation_step
    validation_mean: float | None = None  # every source counted once
    notes: tuple[str, ...] = ()  # plain-language flags: "no eval summary", "running: step 50/200"

    @property
    def has_eval(self) -> bool:
        return self.eval_average is not None or bool(self.eval_tasks)

    @property
    def status(self) -> str:
        if self.finished:
            return "finished"
        if self.step is None:
            return "no progress"
        return f"running {self.step}/{self.total_steps}" if self.total_steps else f"running (step {self.step})"


# ----------------------------------------------------------------------------------- pure parsing
def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def unwrap_spec(doc, uri: str) -> tuple[dict, str | None]:
    """The bare spec mapping and the run's name when the document is a whole TrainingRun."""
    if not isinstance(doc, dict):
        raise CompareError(f"{artifacts.run_file(uri, SPEC)}: expected a JSON object, got {type(doc).__name__}")
    if isinstance(doc.get("spec"), dict) and ("kind" in doc or "metadata" in doc):
        name = (doc.get("metadata") or {}).get("name")
        return doc["spec"], name if isinstance(name, str) and name else None
    return doc, None


def normalised_weights(spec: dict, uri: str) -> dict[str, float]:
    where = artifacts.run_file(uri, SPEC)
    sources = (spec.get("data") or {}).get("sources")
    if not isinstance(sources, list) or not sources:
        raise CompareError(f"{where}: no data.sources")
    raw: dict[str, float] = {}
    for i, s in enumerate(sources):
        name = s.get("name") if isinstance(s, dict) else None
        w = _number(s.get("weight")) if isinstance(s, dict) else None
        if not isinstance(name, str) or not name:
            raise CompareError(f"{where}: data.sources[{i}] has no name")
        if w is None or not math.isfinite(w) or w < 0:
            raise CompareError(f"{where}: data.sources[{i}] ({name}) has no usable weight ({s.get('weight')!r})")
        raw[name] = raw.get(name, 0.0) + w
    total = sum(raw.values())
    if total <= 0:
        raise CompareError(f"{where}: data.sources weights sum to {total}; they cannot be normalised")
    return {k: v / total for k, v in raw.items()}


def run_result_from(
    uri: str,
    spec_doc: object,
    progress: ProgressDoc | None = None,
    metrics_text: str | None = None,
    eval_summary: EvalSummaryDoc | None = None,
    validation: list[ValidationLine] | None = None,
) -> RunResult:
    """Pure: a RunResult from the documents of one run (any of progress/metrics/eval may be missing)."""
    spec, meta_name = unwrap_spec(spec_doc, uri)
    weights = normalised_weights(spec, uri)
    name = meta_name or uri.rstrip("/").rsplit("/", 1)[-1] or uri
    notes: list[str] = []

    lines, bad = parse_metrics(metrics_text or "")
    if bad:
        notes.append(f"{bad} unreadable metrics.jsonl line(s) skipped")
    curve = tuple((m["step"], float(m["loss"])) for m in lines if _number(m.get("loss")) is not None)
    progress = progress if isinstance(progress, dict) else None

    final_loss, loss_from = None, None
    if curve:
        final_loss, loss_from = curve[-1][1], METRICS
    elif progress and _number(progress.get("loss")) is not None:
        final_loss, loss_from = float(progress["loss"]), PROGRESS
    if final_loss is not None and not math.isfinite(final_loss):
        notes.append(f"final loss is {final_loss}")
        final_loss = None
    if final_loss is None and loss_from is None:
        notes.append("no loss (no metrics.jsonl and no progress.json)")

    step = lines[-1]["step"] if lines else None
    if progress and isinstance(progress.get("step"), int):
        step = max(step or 0, progress["step"])
    total = progress.get("totalSteps") if progress and isinstance(progress.get("totalSteps"), int) else None
    if total is None:
        total = planned_steps(spec)
    finished = bool(progress and progress.get("finished") is True) or (
        step is not None and total is not None and step >= total
    )
    if not finished:
        notes.append("not finished" + (f": step {step}/{total}" if step is not None and total else ""))

    tokens = int(progress["tokens"]) if progress and _number(progress.get("tokens")) is not None else None
    if tokens is None and step is not None:
        per_step = tokens_per_step(spec)
        tokens = step * per_step if per_step else None

    seqs = lines[-1].get("sourceSequences") if lines else None
    source_sequences = {k: int(v) for k, v in seqs.items() if _number(v) is not None} if isinstance(seqs, dict) else {}

    eval_step, eval_average, eval_tasks = None, None, {}
    if isinstance(eval_summary, dict):
        eval_tasks = {str(t): float(v) for t, v in (eval_summary.get("tasks") or {}).items() if _number(v) is not None}
        eval_average = _number(eval_summary.get("average"))
        if eval_average is None and eval_tasks:
            eval_average = sum(eval_tasks.values()) / len(eval_tasks)
            notes.append("eval average computed from the task scores (summary.json had none)")
        eval_step = eval_summary.get("step") if isinstance(eval_summary.get("step"), int) else None
        if eval_step is not None and step is not None and eval_step < step:
            notes.append(f"eval is from step {eval_step}, not the last step {step}")
    else:
        notes.append("no eval summary")

    validation_step, per_source, validation_mean = None, {}, None
    if validation:
        last = validation[-1]
        validation_step = last["step"]
        per_source = {k: float(v["loss"]) for k, v in last.get("sources", {}).items() if math.isfinite(v["loss"])}
        validation_mean = _number(last.get("mean"))
        if step is not None and validation_step < step:
            notes.append(f"validation loss is from step {validation_step}, not the last step {step}")
    else:
        notes.append("no validation loss (validation.jsonl)")

    return RunResult(
        uri=uri,
        name=name,
        weights=weights,
        final_loss=final_loss,
        loss_from=loss_from,
        loss_curve=curve,
        step=step,
        total_steps=total,
        tokens=tokens,
        finished=finished,
        eval_step=eval_step,
        eval_average=eval_average,
        eval_tasks=eval_tasks,
        source_sequences=source_sequences,
        validation_step=validation_step,
        validation=per_source,
        validation_mean=validation_mean,
        notes=tuple(notes),
    )


def tokens_per_step(spec: dict) -> int | None:
    gb = (spec.get("training") or {}).get("globalBatchSize")
    seq = (spec.get("data") or {}).get("seqLength", 1024)
    return gb * seq if isinstance(gb, int) and isinstance(seq, int) else None


def planned_steps(spec: dict) -> int | None:
    total = (spec.get("data") or {}).get("totalTokens")
    per_step = tokens_per_step(spec)
    return total // per_step if isinstance(total, int) and per_step else None


# -------------------------------------------------------------------------------------- I/O shells


def load_run_results(
    run_uri: str, options: StorageOptions | None = None, files: Mapping[str, int] | None = None
) -> RunResult:
    """Read one run's spec.json, progress.json, metrics.jsonl, latest eval summary and validation lines.
    `files` ({relpath: size} under the run, from a listing already made): only the records there are read."""
    run_uri = run_uri.rstrip("/")
    spec_doc = artifacts.read_spec_document(run_uri, options)
    if spec_doc is None:
        raise CompareError(f"{run_uri}: no readable spec.json: not a trainkit run output (or the run never started)")

    def present(name: str) -> bool:
        return files is None or name in files

    return run_result_from(
        run_uri,
        spec_doc,
        artifacts.read_progress(run_uri, options) if present(PROGRESS) else None,
        artifacts.read_metrics_text(run_uri, options) if present(METRICS) else None,
        artifacts.read_latest_eval_summary(run_uri, options, None if files is None else artifacts.summary_steps(files)),
        artifacts.read_validation(run_uri, options) if present(VALIDATION) else [],
    )


def run_listings(uri: str, options: StorageOptions | None = None) -> dict[str, dict[str, int]]:
    """The runs at `uri` with their files ({relpath: size}), from ONE recursive listing: `uri` itself when it
    holds spec.json, else its sub-folders that do (a sweep's base output URI). A 512-run sweep is listed in a
    few pages instead of a listing plus a HEAD per run.

    Raises CompareError naming the URI when there is no run, or when a folder looks like a run
    (progress.json / metrics.jsonl) but has no spec.json."""
    uri = uri.rstrip("/")
    listing = storage.list_sizes(uri, options)
    if SPEC in listing:
        return {uri: listing}
    if PROGRESS in listing or METRICS in listing:
        raise CompareError(f"{uri}: has progress/metrics but no spec.json: not a complete trainkit run output")
    by_child: dict[str, dict[str, int]] = {}
    for rel, size in listing.items():
        child, _, rest = rel.partition("/")
        if rest:
            by_child.setdefault(child, {})[rest] = size
    runs = {storage.join(uri, c): files for c, files in sorted(by_child.items()) if SPEC in files}
    broken = [
        storage.join(uri, c) for c, f in sorted(by_child.items()) if SPEC not in f and (PROGRESS in f or METRICS in f)
    ]
    if broken:
        raise CompareError("runs without spec.json: " + ", ".join(broken))
    if not runs:
        raise CompareError(f"{uri}: no runs found (no spec.json there or in any sub-folder)")
    return runs


def discover_runs(uri: str, options: StorageOptions | None = None) -> list[str]:
    """The run URIs at `uri` (see `run_listings`)."""
    return list(run_listings(uri, options))


# Runs are read in parallel: each is a few small GETs, so a sweep's reads are round trips, not bandwidth.
READ_THREADS = 16


def collect_runs(uris: list[str], options: StorageOptions | None = None) -> list[RunResult]:
    """Every run under the given URIs (each a run or a sweep's base URI), loaded, duplicates dropped."""
    if not uris:
        raise CompareError("no URIs given")
    found: dict[str, dict[str, int]] = {}
    for u in uris:
        for run, files in run_listings(u, options).items():
            found.setdefault(run, files)
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(READ_THREADS, len(found))) as pool:
        results = list(pool.map(lambda item: load_run_results(item[0], options, item[1]), found.items()))
    return unique_names(results)


def unique_names(results: list[RunResult]) -> list[RunResult]:
    """Runs from different folders may share a name: those get the last two URI segments instead."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.name] = counts.get(r.name, 0) + 1
    return [replace(r, name="/".join(r.uri.rstrip("/").split("/")[-2:])) if counts[r.name] > 1 else r for r in results]
