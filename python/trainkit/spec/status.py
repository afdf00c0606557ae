"""The TrainingRun status the operator writes: typed, and part of the generated CRD."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Phase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"]
TERMINAL_PHASES = ("Succeeded", "Failed")

# Why an object failed before it created anything: its spec (a missing or unreadable Secret included), or, for a
# run, a TrainingData it names. Nothing ever ran, so fixing the cause lets it start: such a Failed status is
# re-evaluated, for runs and TrainingData alike (`final_status`).
REASON_INVALID_SPEC = "InvalidSpec"
REASON_DATA_FAILED = "DataFailed"
FAILED_BEFORE_START = (REASON_INVALID_SPEC, REASON_DATA_FAILED)


def final_status(
    phase: str, reason: str | None, child: str | None, terminal: tuple[str, ...] = TERMINAL_PHASES
) -> bool:
    """Whether a status in `phase` is final (never reconciled again): a terminal phase, except Failed for a
    reason in FAILED_BEFORE_START while no child (`child`: the RayJob's name) was ever created."""
    if phase not in terminal:
        return False
    return not (phase == "Failed" and reason in FAILED_BEFORE_START and not child)


# KubeRay's enums as known today (ray.io/v1 RayJob status; identical at v1.7.0 and master). The status
# fields below are open strings, NOT these Literals: KubeRay adds values (ValidationFailed came in v1.5), and
# a closed enum would make the operator's status write fail for good the day it meets one. A value outside
# these is kept verbatim and explained in the message (trainkit_operator.decide.derive_phase).
KNOWN_JOB_STATUSES = ("", "PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")
KNOWN_JOB_DEPLOYMENT_STATUSES = (
    "",
    "Initializing",
    "Running",
    "Complete",
    "Failed",
    "ValidationFailed",
    "Suspending",
    "Suspended",
    "Retrying",
    "Waiting",
)
KubeRayValue = Annotated[str, Field(max_length=128)]

# Condition types the operator always initialises (an absent condition is not "False").
CONDITION_TYPES = ("SpecValid", "Admitted", "Running", "Succeeded", "Failed")


class StatusModel(BaseModel):
    # Status comes back from the API server with whatever an older operator wrote: ignore extras.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


S = TypeVar("S", bound=BaseModel)


def previous_status_of(obj: Mapping, model: type[S]) -> S | None:
    """The status an object carries, or None when it has none yet or it is malformed (then it is
    replaced, never fatal: an older operator or a hand edit may have written anything)."""
    raw = obj.get("status") or {}
    if not isinstance(raw, Mapping) or not raw.get("phase"):
        return None
    try:
        return model.model_validate(raw)
    except Exception:  # noqa: BLE001 - see the docstring
        return None


class Condition(StatusModel):
    """metav1.Condition."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(min_length=1, max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: str
    observed_generation: Annotated[int, Field(ge=0)] | None = None


class Progress(StatusModel):
    step: Annotated[int, Field(ge=0)] = 0
    total_steps: Annotated[int, Field(ge=0)] = 0
    percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    tokens: Annotated[int, Field(ge=0)] = 0
    loss: float | None = None
    tokens_per_second: float | None = None
    mfu: float | None = None
    eta_seconds: float | None = None
    updated_at: str | None = None


class CheckpointRef(StatusModel):
    step: Annotated[int, Field(ge=0)]
    uri: str


class EvalSummary(StatusModel):
    step: Annotated[int, Field(ge=0)]
    average: float | None = None
    tasks: dict[str, float] = {}
    report_uri: str | None = None


class ValidationSummary(StatusModel):
    """Held-out validation loss at the run's latest validation step (validation.jsonl's last line)."""

    step: Annotated[int, Field(ge=0)]
    mean: float | None = Field(None, description="Every source counted once")
    sources: dict[str, float] = {}


class Artifacts(StatusModel):
    output: str | None = None
    checkpoints: str | None = None
    eval: str | None = None
    logs: str | None = None


class DatasetRef(StatusModel):
    """A source that named a TrainingData: what it resolved to when the run started."""

    dataset: str
    uri: str
    fingerprint: str | None = None


class TrainingRunStatus(StatusModel):
    phase: Phase = "Pending"
    reason: str | None = None
    message: str | None = None
    job_status: KubeRayValue | None = None
    job_deployment_status: KubeRayValue | None = None
    ray_job_name: str | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    conditions: list[Condition] = []
    progress: Progress | None = None
    last_checkpoint: CheckpointRef | None = None
    eval: EvalSummary | None = None
    validation: ValidationSummary | None = None
    artifacts: Artifacts | None = None
    start_time: str | None = None
    completion_time: str | None = None
    datasets: dict[str, DatasetRef] | None = Field(
        None, description="source name -> the TrainingData it named, resolved (fixed once the run starts)"
    )
