"""Reading what the trainer and the evaluator wrote under a run's output URI, for the status.

The records and their readers are `trainkit.artifacts`'; this shell only adds the operator's rule for
storage trouble. The operator reads with its OWN credentials (the standard AWS_* variables of its
Deployment, from a Secret); the run's Secret is only referenced by the Ray pods. A record that is
absent, bad, or cannot be read now comes back as None; the status then keeps what it showed before,
so a storage hiccup never erases progress.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from trainkit import artifacts, storage
from trainkit.artifacts import EvalSummaryDoc, ProgressDoc
from trainkit.spec.models import TrainingRunSpec

from trainkit_operator.config import OperatorConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Observed:
    """What one reconcile read from object storage (None: not there, or not readable now)."""

    progress: ProgressDoc | None = None
    checkpoint: dict[str, object] | None = None  # {step, uri} of the newest complete checkpoint
    eval_summary: EvalSummaryDoc | None = None


def options_for(spec: TrainingRunSpec, config: OperatorConfig) -> storage.StorageOptions:
    return storage.StorageOptions(
        endpoint=spec.storage.endpoint or config.default_storage_endpoint, region=spec.storage.region
    )


def _unless_unreachable(what: str, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except Exception as e:  # noqa: BLE001 - storage trouble must not stop the reconcile
        # The message names the URI and the error class only; never credentials (botocore never echoes them).
        log.warning("could not read %s: %s", what, type(e).__name__)
        return None


def observe_outputs(output_uri: str, options: storage.StorageOptions) -> Observed:
    progress = _unless_unreachable(
        artifacts.run_file(output_uri, artifacts.PROGRESS), lambda: artifacts.read_progress(output_uri, options)
    )
    step = _unless_unreachable(
        artifacts.checkpoints_uri(output_uri), lambda: artifacts.latest_complete_checkpoint(output_uri, options)
    )
    checkpoint = None if step is None else {"step": step, "uri": artifacts.checkpoint_uri(output_uri, step) + "/"}
    eval_summary = _unless_unreachable(
        artifacts.eval_root(output_uri), lambda: artifacts.read_latest_eval_summary(output_uri, options)
    )
    return Observed(progress=progress, checkpoint=checkpoint, eval_summary=eval_summary)
