"""The one owner of a run's layout under `output.uri`: every file and folder name, the records they
hold, their pure parsers, and one reader per record.

    <output.uri>/
      owner.json                         OwnerRecord: who owns this prefix (written first, once, conditionally)
      spec.json                          the TrainingRun spec as resolved (written by the trainer's preflight)
      progress.json                      ProgressDoc, rewritten at each log step (rank 0)
      metrics.jsonl                      one MetricsLine per log step
      validation.jsonl                   one ValidationLine per eval step and the last: held-out loss per source
      loss.png                           the loss curve (`trainkit run`)
      checkpoints/step-XXXXXXXX/         a Hugging Face folder + trainer/; checkpoint.json (the manifest) written last
      eval/step-XXXXXXXX/                results.json, report.md, tasks.png; summary.json written last
      eval/scores_by_step.png            score vs step over every eval of the run
      outcome.json                       OutcomeDoc: how a PACKED run ended (its pack's driver writes it; the
                                         pack's RayJob is shared, so its end is not this run's)
      logs/<stream>.NNNNN.log            stdout+stderr of the driver (`driver`) and each Ray Train worker
                                         (`worker-<rank>`), in segments (numbered on across restarts), shipped
                                         while the run goes and at its end (status.artifacts.logs)

Readers treat a bad object the same everywhere: an object that is absent, not JSON, or not the
record's shape is "not there" (None, or skipped in a list) and the reason is logged; storage that
cannot be reached raises `storage.StorageError` (callers decide whether that stops them).
Writers live with their producers (trainer, evaluator) but take every name and path from here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeGuard, TypeVar

from trainkit import storage
from trainkit.storage import StorageOptions

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ layout names
OWNER = "owner.json"  # the first object of a run: nobody else may write under a prefix it claims
SPEC = "spec.json"
PROGRESS = "progress.json"
METRICS = "metrics.jsonl"
VALIDATION = "validation.jsonl"
LOSS_PLOT = "loss.png"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
LOGS = "logs"
TENSORBOARD = "tensorboard"  # TensorBoard event files (trainkit.train.tracking), events.out.tfevents.*
TENSORBOARD_EVENT_PREFIX = "events.out.tfevents."
OUTCOME = "outcome.json"
# Under a sweep's base output (template.output.uri), beside its runs' folders: the whole leaderboard the
# operator keeps there (the sweep's status carries only the top rows).
SWEEP_LEADERBOARD = "leaderboard.json"

MANIFEST = "checkpoint.json"  # in each checkpoint folder; written last: it commits the checkpoint
TRAINER_STATE = "trainer/state.json"
OPTIMIZER_STATE = "trainer/optimizer.pt"
TRAINER_DIR = "trainer/"  # the trainer's own state inside a checkpoint (not needed to evaluate it)

EVAL_RESULTS = "results.json"
EVAL_SUMMARY = "summary.json"  # in each eval folder; written last: it commits the eval
EVAL_REPORT = "report.md"
EVAL_TASKS_PLOT = "tasks.png"
SCORES_BY_STEP = "scores_by_step.png"  # under eval/, across steps

# Log segments: `<stream>.<index, 5+ digits>.log`; a stream is `driver` or `worker-<rank>`.
DRIVER_LOG = "driver"
LOG_SEGMENT = re.compile(r"^(driver|worker-\d+)\.(\d{5,})\.log$")

# The one step-folder rule: `step-` and the step zero-padded to at least 8 digits (what step_dir_name writes).
STEP_DIR = re.compile(r"^step-(\d{8,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def step_of(name: str) -> int | None:
    """The step of a `step-XXXXXXXX` folder name (a trailing '/' or a leading path is ignored), else None."""
    m = STEP_DIR.match(name.rstrip("/").rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def run_file(output_uri: str, name: str) -> str:
    """A file directly under the run's output URI (SPEC, PROGRESS, METRICS, LOSS_PLOT)."""
    return storage.join(output_uri, name)


def checkpoints_uri(output_uri: str) -> str:
    return storage.join(output_uri, CHECKPOINTS)


def checkpoint_uri(output_uri: str, step: int) -> str:
    return storage.join(output_uri, CHECKPOINTS, step_dir_name(step))


def eval_root(output_uri: str) -> str:
    return storage.join(output_uri, EVAL)


def eval_dir(output_uri: str, step: int) -> str:
    return storage.join(output_uri, EVAL, step_dir_name(step))


def eval_report_uri(output_uri: str, step: int) -> str:
    return storage.join(eval_dir(output_uri, step), EVAL_REPORT)


def scores_by_step_uri(output_uri: str) -> str:
    return storage.join(output_uri, EVAL, SCORES_BY_STEP)


def logs_uri(output_uri: str) -> str:
    return storage.join(output_uri, LOGS)


def tensorboard_uri(output_uri: str) -> str:
    """The folder to point TensorBoard at (`tensorboard --logdir <this>`)."""
    return storage.join(output_uri, TENSORBOARD)


def tensorboard_file_uri(output_uri: str, name: str) -> str:
    return storage.join(output_uri, TENSORBOARD, name)


def list_tensorboard_files(output_uri: str, options: StorageOptions | None = None) -> list[str]:
    """Names of the event files under tensorboard/ (other names are ignored)."""
    names = storage.list_names(tensorboard_uri(output_uri), options)
    return [n for n in names if n.startswith(TENSORBOARD_EVENT_PREFIX)]


def worker_log_stream(rank: int) -> str:
    return f"worker-{rank}"


def log_segment_name(stream: str, index: int) -> str:
    return f"{stream}.{index:05d}.log"


def log_segment_uri(output_uri: str, stream: str, index: int) -> str:
    return storage.join(output_uri, LOGS, log_segment_name(stream, index))


def parse_log_listing(names: list[str]) -> dict[str, list[int]]:
    """Segment indices per stream, each ascending, streams in name order (other names are ignored)."""
    found: dict[str, list[int]] = {}
    for name in names:
        m = LOG_SEGMENT.match(name)
        if m:
            found.setdefault(m.group(1), []).append(int(m.group(2)))
    return {k: sorted(found[k]) for k in sorted(found, key=lambda s: (s != DRIVER_LOG, len(s), s))}


def list_log_segments(output_uri: str, options: StorageOptions | None = None) -> dict[str, list[int]]:
    return parse_log_listing(storage.list_names(logs_uri(output_uri), options))


def run_uri_of_checkpoint(checkpoint: str) -> str | None:
    """`<run>/checkpoints/step-XXXXXXXX` -> `<run>` (where its evals go by default); None for other layouts."""
    head, _, name = checkpoint.rstrip("/").rpartition("/")
    run, _, folder = head.rpartition("/")
    return run if folder == CHECKPOINTS and step_of(name) is not None and run else None


def sweep_leaderboard_uri(sweep_output_uri: str) -> str:
    return storage.join(sweep_output_uri, SWEEP_LEADERBOARD)


def now_iso() -> str:
    """Now as RFC 3339 UTC to the second: progress.json's updatedAt, and the operator's status times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------ records
class ProgressDoc(TypedDict, total=False):
    """progress.json (the operator shows it in `kubectl get trainingruns`)."""

    step: int
    totalSteps: int
    tokens: int
    loss: float
    tokensPerSecond: float
    mfu: float | None
    etaSeconds: float | None
    updatedAt: str
    finished: bool
    validation: dict[str, Any]  # the latest held-out loss: {step, mean, sources: {name: loss}}


class MetricsLine(TypedDict, total=False):
    """One line of metrics.jsonl."""

    step: int
    startStep: int
    tokens: int
    loss: float
    lr: float
    gradNorm: float
    tokensPerSecond: float
    mfu: float | None
    sourceSequences: dict[str, int]
    sourceTokens: dict[str, int]
    streamDigest: str


class SourceValidation(TypedDict):
    loss: float  # mean next-token cross-entropy (nats) over the held-out tokens
    tokens: int  # predicted tokens it is the mean of


class ValidationLine(TypedDict, total=False):
    """One line of validation.jsonl: held-out loss per source at one step (trainkit.train.validation)."""

    step: int
    tokens: int  # training tokens seen at that step
    sources: dict[str, SourceValidation]  # every held-out set measured: the run's sources and its targets
    targets: list[str]  # the names in `sources` the run does not train on (data.validationTargets)
    mean: float  # every source counted once (and the targets marked countInMean)


class EvalSummaryDoc(TypedDict, total=False):
    """eval/step-XXXXXXXX/summary.json; scores are fractions, as lm-eval reports them."""

    step: int
    average: float | None
    tasks: dict[str, float]
    metrics: dict[str, dict[str, float | None]]
    headlineMetric: dict[str, str]
    numFewshot: dict[str, int | None]
    random: dict[str, float | None]
    samples: dict[str, int | None]
    checkpoint: str
    evalSeconds: float


OUTCOME_STATES = ("Succeeded", "Failed")


class OutcomeDoc(TypedDict, total=False):
    """outcome.json: how a packed run ended. `state` Succeeded or Failed, `message` why (a failure's cause),
    `step` the last complete checkpoint's step (None: none), `finishedAt` RFC 3339, `owner` whose outcome it
    is (owner.json's owner: only that run reads it as its own); and copies of the run's
    final `progress` (progress.json), `eval` (the final eval summary) and `validation` (the last line of
    validation.jsonl), so that one read gives the operator a finished packed run's whole status (a pack's runs
    end together, and the reads of a namespace take turns)."""

    state: str
    message: str
    step: int | None
    finishedAt: str
    owner: str  # the run it is the outcome of (OwnerRecord.owner): a re-created run of the same name is another
    progress: ProgressDoc
    eval: EvalSummaryDoc
    validation: ValidationLine


def outcome_doc(
    state: str,
    message: str,
    step: int | None,
    finished_at: str,
    owner: str,
    progress: ProgressDoc | None = None,
    eval_summary: EvalSummaryDoc | None = None,
    validation: ValidationLine | None = None,
) -> OutcomeDoc:
    if state not in OUTCOME_STATES:
        raise ValueError(f"outcome state must be one of {OUTCOME_STATES}, got {state!r}")
    doc = OutcomeDoc(state=state, message=message[:4000], step=step, finishedAt=finished_at, owner=owner)
    if progress is not None:
        doc["progress"] = progress
    if eval_summary is not None:
        doc["eval"] = EvalSummaryDoc(
            **{k: v for k, v in eval_summary.items() if k in ("step", "average", "tasks")}  # type: ignore[typeddict-item]
        )
    if validation is not None:
        doc["validation"] = validation
    return doc


@dataclass(frozen=True)
class CheckpointManifest:
    """checkpoint.json: {step, files: {relpath: size}, ...extra} (extra: what the trainer adds, e.g. tokens)."""

    step: int
    files: Mapping[str, int]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "step": self.step, "files": dict(self.files)}


@dataclass(frozen=True)
class OwnerRecord:
    """owner.json: {owner, specHash, createdAt}. `owner` is `k8s:<namespace>/<name>/<uid>` for an operator run
    (a delete + re-create has a new uid, so it is another owner) and `local:<hash of what it trains>` for
    `trainkit run` (re-running it resumes, also with other resources/scheduling/eval; another model, data or
    training block is another owner). specHash is the whole spec's, for the reader."""

    owner: str
    spec_hash: str
    created_at: str = ""

    def to_json(self) -> dict[str, str]:
        return {"owner": self.owner, "specHash": self.spec_hash, "createdAt": self.created_at}


def owner_of_run(run_uid: str | None, namespace: str | None, name: str | None, trained_hash: str) -> str:
    """The owner id of the run now starting (pure)."""
    if run_uid:
        return f"k8s:{namespace or 'default'}/{name or ''}/{run_uid}"
    return f"local:{trained_hash}"


def ownership_problem(output_uri: str, mine: OwnerRecord, found: OwnerRecord | None) -> str | None:
    """None when `found` (the prefix's owner.json) is ours; else why the run must not write there."""
    if found is not None and found.owner == mine.owner:
        return None
    other = "an unreadable owner.json" if found is None else f"{found.owner} (spec {found.spec_hash})"
    return (
        f"spec.output.uri {output_uri} belongs to another run: {other}; this run is {mine.owner}. Nothing was "
        f"written. Choose another output.uri, or, to hand the prefix over on purpose, delete {OWNER} there"
    )


def parse_owner(doc: object, where: str) -> OwnerRecord:
    if not isinstance(doc, dict) or not isinstance(doc.get("owner"), str) or not isinstance(doc.get("specHash"), str):
        raise ArtifactError(f"{where}: expected an object with string fields 'owner' and 'specHash'")
    return OwnerRecord(
        owner=doc["owner"][:300], spec_hash=doc["specHash"][:128], created_at=str(doc.get("createdAt"))[:64]
    )


def claim_output(output_uri: str, mine: OwnerRecord, options: StorageOptions | None = None) -> str | None:
    """Claim the prefix for `mine` (conditional create of owner.json) or check that it is already ours.
    Returns None when the run may write there, else the reason (nothing was written)."""
    uri = run_file(output_uri, OWNER)
    if storage.create_exclusive(uri, json.dumps(mine.to_json(), sort_keys=True).encode() + b"\n", options):
        return None
    return ownership_problem(output_uri, mine, _read_record(uri, options, parse_owner))


class ArtifactError(ValueError):
    """An object under a run's output that is not its record's shape; the message names the object and field."""


# ------------------------------------------------------------------------------------ pure parsers
def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_json(data: bytes, where: str) -> object:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:  # `[[[[...` a hundred thousand deep: Python's json recurses per level
        raise ArtifactError(f"{where}: nested too deeply to be a trainkit record") from None


def parse_manifest(doc: object, where: str) -> CheckpointManifest:
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: expected an object with 'step' and 'files'")
    step, files = doc.get("step"), doc.get("files")
    if not _is_int(step) or step < 0:
        raise ArtifactError(f"{where}: field 'step' must be a non-negative integer, got {step!r}")
    if not isinstance(files, dict) or not files or not all(isinstance(k, str) and _is_int(v) for k, v in files.items()):
        raise ArtifactError(f"{where}: field 'files' must map relative paths to sizes in bytes (and list at least one)")
    for rel in files:
        try:
            storage.safe_relpath(rel, f"{where}: field 'files'")
        except storage.UnsafePath as e:
            raise ArtifactError(str(e)) from None
    extra = {k: v for k, v in doc.items() if k not in ("step", "files")}
    return CheckpointManifest(step=step, files=dict(files), extra=extra)


def checkpoint_problems(step: int, manifest: CheckpointManifest, present: Mapping[str, int]) -> list[str]:
    """THE completeness rule: a checkpoint folder of `step` is complete iff its manifest is for that step
    and every file it lists is present with the listed size. Returns what is wrong ([] = complete)."""
    problems = [] if manifest.step == step else [f"{MANIFEST} is for step {manifest.step}, not {step}"]
    for rel, size in sorted(manifest.files.items()):
        if rel not in present:
            problems.append(f"{rel} is missing")
        elif present[rel] != size:
            problems.append(f"{rel} has {present[rel]} bytes, {MANIFEST} says {size}")
    return problems


def parse_checkpoint_listing(listing: Mapping[str, int]) -> dict[int, dict[str, int]]:
    """{"step-00000004/config.json": 812, ...} (paths under checkpoints/) -> {4: {"config.json": 812, ...}};
    other names are ignored."""
    out: dict[int, dict[str, int]] = {}
    for rel, size in listing.items():
        head, _, rest = rel.partition("/")
        step = step_of(head) if "/" not in head else None
        if step is not None and rest:
            out.setdefault(step, {})[rest] = size
    return out


def complete_steps(listing: Mapping[str, int], manifests: Mapping[int, CheckpointManifest | None]) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    by_step = parse_checkpoint_listing(listing)
    return sorted(
        s
        for s, files in by_step.items()
        if MANIFEST in files and (m := manifests.get(s)) is not None and not checkpoint_problems(s, m, files)
    )


def parse_outcome(doc: object, where: str) -> OutcomeDoc:
    """The outcome's state, message and step; its progress and eval copies only when each is its record's
    shape (a bad copy is dropped, never the outcome)."""
    if not isinstance(doc, dict) or doc.get("state") not in OUTCOME_STATES:
        raise ArtifactError(f"{where}: expected an object whose 'state' is one of {', '.join(OUTCOME_STATES)}")
    step = doc.get("step")
    out = OutcomeDoc(
        state=doc["state"],
        message=str(doc.get("message") or "")[:4000],
        step=step if _is_int(step) and step >= 0 else None,
        finishedAt=str(doc.get("finishedAt") or "")[:64],
        owner=str(doc.get("owner") or "")[:300],
    )
    for key, parse in (("progress", parse_progress), ("eval", parse_eval_summary)):
        if key in doc:
            try:
                out[key] = parse(doc[key], f"{where}: {key}")  # type: ignore[literal-required]
            except ArtifactError as e:
                _skip(e)
    if "validation" in doc:
        line = validation_line(doc["validation"])
        if line is not None:
            out["validation"] = line
        else:
            _skip(ArtifactError(f"{where}: validation: not a validation record"))
    return out


def parse_progress(doc: object, where: str) -> ProgressDoc:
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: expected an object, got {type(doc).__name__}")
    if not _is_int(doc.get("step")):
        raise ArtifactError(f"{where}: field 'step' must be an integer, got {doc.get('step')!r}")
    return ProgressDoc(**doc)  # extra keys are kept as written


def _json_object_lines(text: str) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a .jsonl text, and the count of lines that are not one (blank lines are neither).
    Deep nesting is unreadable like any other bad line (Python's json recurses per level)."""
    docs: list[dict[str, Any]] = []
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            docs.append(doc)
        else:
            bad += 1
    return docs, bad


def parse_metrics(text: str) -> tuple[list[MetricsLine], int]:
    """metrics.jsonl lines (by step, the last line of a step wins) and the count of unreadable lines."""
    by_step: dict[int, MetricsLine] = {}
    docs, bad = _json_object_lines(text)
    for m in docs:
        if not _is_int(m.get("step")):
            bad += 1
            continue
        by_step[m["step"]] = MetricsLine(**m)  # type: ignore[typeddict-item]
    return [by_step[s] for s in sorted(by_step)], bad


def parse_validation(text: str) -> tuple[list[ValidationLine], int]:
    """validation.jsonl lines (by step, the last line of a step wins) and the count of unreadable lines;
    a line is readable when its step is an integer and every source has a finite loss and a token count."""
    by_step: dict[int, ValidationLine] = {}
    docs, bad = _json_object_lines(text)
    for v in docs:
        line = validation_line(v)
        if line is None:
            bad += 1
            continue
        by_step[line["step"]] = line
    return [by_step[s] for s in sorted(by_step)], bad


def validation_line(v: object) -> ValidationLine | None:
    """One validation record (a line of validation.jsonl, or an outcome's copy), or None when it is not one."""
    if not isinstance(v, dict):
        return None
    sources = v.get("sources")
    targets = v.get("targets", [])
    if (
        not isinstance(targets, list)
        or not all(isinstance(t, str) for t in targets)
        or not _is_int(v.get("step"))
        or not isinstance(sources, dict)
        or not all(
            isinstance(s, dict) and _is_number(s.get("loss")) and _is_int(s.get("tokens")) for s in sources.values()
        )
    ):
        return None
    return ValidationLine(**v)


def parse_eval_summary(doc: object, where: str, step: int | None = None) -> EvalSummaryDoc:
    """A summary with numeric task scores; `step` (from its folder) fills a missing 'step'."""
    if not isinstance(doc, dict):
        raise ArtifactError(f"{where}: expected an object, got {type(doc).__name__}")
    tasks = doc.get("tasks")
    if not isinstance(tasks, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in tasks.items()):
        raise ArtifactError(f"{where}: field 'tasks' must map task names to scores")
    average = doc.get("average")
    if average is not None and not _is_number(average):
        raise ArtifactError(f"{where}: field 'average' must be a number, got {average!r}")
    out = dict(doc)
    if not _is_int(out.get("step")):
        if step is None:
            raise ArtifactError(f"{where}: field 'step' must be an integer, got {doc.get('step')!r}")
        out["step"] = step
    return EvalSummaryDoc(**out)


# ------------------------------------------------------------------------------------------ readers
def _read_quietly(uri: str, options: StorageOptions | None) -> bytes | None:
    """The object's bytes, or None when it is absent. Unreachable storage raises StorageError."""
    try:
        return storage.read_bytes(uri, options)
    except FileNotFoundError:
        return None


def _skip(reason: ArtifactError) -> None:
    log.warning("ignoring %s", reason)


R = TypeVar("R")


def _read_record(uri: str, options: StorageOptions | None, parse: Callable[[Any, str], R]) -> R | None:
    """The one way a record is read: absent -> None; not JSON or the wrong shape -> None, the reason logged
    (a bad object is skipped the same way everywhere); unreachable storage raises StorageError."""
    raw = _read_quietly(uri, options)
    if raw is None:
        return None
    try:
        return parse(parse_json(raw, uri), uri)
    except ArtifactError as e:
        _skip(e)
        return None


def _json_object(doc: Any, uri: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ArtifactError(f"{uri}: expected a JSON object, got {type(doc).__name__}")
    return doc


def read_spec_document(output_uri: str, options: StorageOptions | None = None) -> dict[str, Any] | None:
    """spec.json as written (a bare spec or a whole TrainingRun), or None."""
    return _read_record(run_file(output_uri, SPEC), options, _json_object)


def read_progress(output_uri: str, options: StorageOptions | None = None) -> ProgressDoc | None:
    return _read_record(run_file(output_uri, PROGRESS), options, parse_progress)


def read_outcome(output_uri: str, options: StorageOptions | None = None) -> OutcomeDoc | None:
    """A packed run's outcome.json, or None (not ended yet, not packed, or unreadable)."""
    return _read_record(run_file(output_uri, OUTCOME), options, parse_outcome)


def read_metrics_text(output_uri: str, options: StorageOptions | None = None) -> str | None:
    """metrics.jsonl as text (None when absent); `parse_metrics` turns it into lines."""
    raw = _read_quietly(run_file(output_uri, METRICS), options)
    return None if raw is None else raw.decode("utf-8", "replace")


def read_metrics(output_uri: str, options: StorageOptions | None = None) -> list[MetricsLine]:
    """The readable metrics lines ([] when there is no metrics.jsonl); unreadable lines are skipped and logged."""
    lines, bad = parse_metrics(read_metrics_text(output_uri, options) or "")
    if bad:
        log.warning("ignoring %d unreadable line(s) of %s", bad, run_file(output_uri, METRICS))
    return lines


def read_validation(output_uri: str, options: StorageOptions | None = None) -> list[ValidationLine]:
    """The readable validation lines ([] when the run measured none); unreadable lines are skipped and logged."""
    raw = _read_quietly(run_file(output_uri, VALIDATION), options)
    lines, bad = parse_validation("" if raw is None else raw.decode("utf-8", "replace"))
    if bad:
        log.warning("ignoring %d unreadable line(s) of %s", bad, run_file(output_uri, VALIDATION))
    return lines


def _step_folders(uri: str, options: StorageOptions | None) -> list[int]:
    """Steps of the `step-XXXXXXXX` folders directly under `uri`, ascending ([] when it does not exist)."""
    return sorted({s for name in storage.list_names(uri, options) if (s := step_of(name)) is not None})


def read_eval_summary(output_uri: str, step: int, options: StorageOptions | None = None) -> EvalSummaryDoc | None:
    uri = storage.join(eval_dir(output_uri, step), EVAL_SUMMARY)
    return _read_record(uri, options, lambda doc, at: parse_eval_summary(doc, at, step))


def read_eval_summaries(output_uri: str, options: StorageOptions | None = None) -> list[EvalSummaryDoc]:
    """Every committed, readable eval summary of the run, by step."""
    found = (read_eval_summary(output_uri, s, options) for s in _step_folders(eval_root(output_uri), options))
    return [s for s in found if s is not None]


def summary_steps(listing: Mapping[str, int]) -> list[int]:
    """Steps whose eval folder holds a summary.json in a run's listing ({relpath: size} under its output), ascending."""
    steps = set()
    for rel in listing:
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] == EVAL and parts[2] == EVAL_SUMMARY and (s := step_of(parts[1])) is not None:
            steps.add(s)
    return sorted(steps)


def read_latest_eval_summary(
    output_uri: str, options: StorageOptions | None = None, steps: list[int] | None = None
) -> EvalSummaryDoc | None:
    """The newest readable summary (an eval folder without one, or with a bad one, is passed over). `steps`:
    the eval steps to try when the caller has listed the run already (`summary_steps`), else they are listed."""
    for step in reversed(_step_folders(eval_root(output_uri), options) if steps is None else sorted(steps)):
        if (found := read_eval_summary(output_uri, step, options)) is not None:
            return found
    return None


def read_manifest(checkpoint: str, options: StorageOptions | None = None) -> CheckpointManifest | None:
    """The parsed checkpoint.json of the checkpoint folder at `checkpoint`, or None (absent or bad: not a checkpoint)."""
    return _read_record(storage.join(checkpoint, MANIFEST), options, parse_manifest)


def list_files(uri: str, options: StorageOptions | None = None) -> dict[str, int]:
    """{relpath: size} of every file under `uri` ({} when it does not exist)."""
    return storage.list_sizes(uri, options)


def list_checkpoints(
    output_uri: str, options: StorageOptions | None = None
) -> tuple[dict[str, int], dict[int, CheckpointManifest | None]]:
    """(listing {relpath: size} under checkpoints/, {step: its parsed manifest or None}) for folders with a manifest."""
    listing = list_files(checkpoints_uri(output_uri), options)
    manifests = {
        step: read_manifest(checkpoint_uri(output_uri, step), options)
        for step, files in parse_checkpoint_listing(listing).items()
        if MANIFEST in files
    }
    return listing, manifests


def latest_complete_checkpoint(output_uri: str, options: StorageOptions | None = None) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    steps = complete_steps(*list_checkpoints(output_uri, options))
    return steps[-1] if steps else None
