"""A TrainingSweep's ONE idempotent reconcile (decisions in `sweeps`; `wiring` says when it runs).

Names of runs are deterministic, so a 409 on create means an earlier incarnation already made it:
never a duplicate, whatever restarts happen.
"""

from __future__ import annotations

from trainkit_operator import decide
from trainkit_operator.config import OperatorConfig
from trainkit_operator.kube import Kube
from trainkit_operator.sweeps import decide_sweep, refused_sweep


def reconcile_sweep(kube: Kube, sweep: dict, config: OperatorConfig | None = None) -> tuple[str, str, str] | None:
    """Read the sweep's runs, decide, create what is due, write the status if it changed.
    Returns the Event of a phase change (type, reason, message), if any."""
    meta = sweep["metadata"]
    ns = meta.get("namespace") or "default"
    decision = decide_sweep(sweep, kube.list_sweep_runs(ns, meta["name"]))
    if decision.create and config is not None and decide.namespace_check_needed(config, None):
        # runs are created only in a namespace that opted in (each would be refused there anyway)
        if refusal := decide.namespace_opt_in_error(ns, kube.namespace_labels(ns), config):
            decision = refused_sweep(sweep, refusal)
    for run in decision.create:
        kube.create_run(ns, run)
    status = decision.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    before = sweep.get("status") or {}
    if before == status:
        return None
    kube.patch_sweep_status(ns, meta["name"], meta.get("resourceVersion"), status)
    if status.get("phase") == before.get("phase"):
        return None
    return (
        "Normal" if status["phase"] != "Failed" else "Warning",
        f"Sweep{status['phase']}",
        status.get("message", ""),
    )
