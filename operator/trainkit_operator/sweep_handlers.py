"""Thin kopf handlers for TrainingSweeps around one idempotent reconcile (decisions in `sweeps`).

Triggered by the sweep's own events, a timer, and any change of a TrainingRun labelled with the
sweep's name (a run finishing frees a slot at once). Names of runs are deterministic, so a 409 on
create means an earlier incarnation already made it: never a duplicate, whatever restarts happen.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from trainkit_operator.kube import (
    GROUP,
    PLURAL,
    SWEEPS,
    VERSION,
    Kube,
    backoff_delay,
    describe_api_error,
    is_transient,
    lock_for,
)
from trainkit_operator.sweeps import SWEEP_LABEL, decide_sweep

log = logging.getLogger("trainkit_operator.sweeps")


def reconcile_sweep(kube: Kube, sweep: dict) -> dict | None:
    """Read the sweep's runs, decide, create what is due, write the status if it changed."""
    meta = sweep["metadata"]
    ns = meta.get("namespace") or "default"
    decision = decide_sweep(sweep, kube.list_sweep_runs(ns, meta["name"]))
    for run in decision.create:
        kube.create_run(ns, run)
    status = decision.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    if (sweep.get("status") or {}) == status:
        return None
    kube.patch_sweep_status(ns, meta["name"], meta.get("resourceVersion"), status)
    return status


def reconcile_sweep_named(memo: Any, ns: str, name: str, retry: int = 0) -> None:
    kube = memo.kube
    with lock_for(memo, ("sweep", ns, name)):
        try:
            sweep = kube.get_sweep(ns, name)
            if sweep is None or sweep["metadata"].get("deletionTimestamp"):
                return
            before = (sweep.get("status") or {}).get("phase")
            written = reconcile_sweep(kube, sweep)
        except Exception as e:  # noqa: BLE001 - any failure becomes a kopf retry with backoff, never a crash
            delay = backoff_delay(retry) if is_transient(e) else backoff_delay(retry, base=5.0)
            raise kopf.TemporaryError(
                f"sweep reconcile failed ({describe_api_error(e)}); retrying", delay=delay
            ) from None
    if written and written.get("phase") != before:
        kopf.event(
            sweep,
            type="Normal" if written["phase"] != "Failed" else "Warning",
            reason=f"Sweep{written['phase']}",
            message=written.get("message", ""),
        )


def register_sweeps(registry: kopf.OperatorRegistry, timer_interval: float = 30.0) -> kopf.OperatorRegistry:
    """Register the sweep handlers (`handlers.register` calls this; its start-up handler sets memo.kube)."""

    def handle(body, memo, retry: int = 0, **_):
        reconcile_sweep_named(memo, body["metadata"].get("namespace") or "default", body["metadata"]["name"], retry)

    kopf.on.create(GROUP, VERSION, SWEEPS, id="sweep-create", registry=registry)(handle)
    kopf.on.update(GROUP, VERSION, SWEEPS, id="sweep-update", registry=registry)(handle)
    kopf.on.resume(GROUP, VERSION, SWEEPS, id="sweep-resume", registry=registry)(handle)
    kopf.timer(GROUP, VERSION, SWEEPS, id="sweep-timer", interval=timer_interval, registry=registry)(handle)

    @kopf.on.event(
        GROUP, VERSION, PLURAL, labels={SWEEP_LABEL: kopf.PRESENT}, id="sweep-run-changed", registry=registry
    )
    def run_changed(body, memo, type, **_):
        if type is None:  # the initial listing: resume handlers cover it
            return
        try:
            reconcile_sweep_named(
                memo, body["metadata"].get("namespace") or "default", body["metadata"]["labels"][SWEEP_LABEL]
            )
        except kopf.TemporaryError as e:
            log.info("sweep reconcile after a run change deferred to the timer: %s", e)

    return registry
