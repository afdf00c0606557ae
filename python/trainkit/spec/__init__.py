"""The TrainingRun contract: models, derived plan, status, CRD generation and file loading."""

from trainkit.spec.load import SpecError, SpecIssue, load_run, load_runs, parse_run, parse_spec
from trainkit.spec.models import TrainingRun, TrainingRunSpec
from trainkit.spec.plan import Plan, PlanError, derive_plan
from trainkit.spec.status import TrainingRunStatus

__all__ = [
    "Plan",
    "PlanError",
    "SpecError",
    "SpecIssue",
    "TrainingRun",
    "TrainingRunSpec",
    "TrainingRunStatus",
    "derive_plan",
    "load_run",
    "load_runs",
    "parse_run",
    "parse_spec",
]
