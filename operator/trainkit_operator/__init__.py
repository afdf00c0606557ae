"""trainkit's Kubernetes operator: TrainingRun (trainkit.dev/v1alpha1) -> KubeRay RayJob (ray.io/v1).

Layout (KubeRay style: API types apart from controllers, children built by pure functions):

Layers, top to bottom (import-linter keeps them so; see pyproject.toml):

- `wiring`          the one registration module: kopf settings, every handler, locks and retries.
- `run_reconcile`   a TrainingRun's ONE idempotent reconcile (read -> decide -> apply).
- `sweep_reconcile`, `data_reconcile`  the same for TrainingSweeps and TrainingData.
- `observe`, `kube` reading run outputs from object storage; the one Kubernetes API client (404/409).
- `decide`          pure: `reads_needed`, `plan_actions` (create, update mutable fields, refuse, nothing)
                    and `summarize(run, seen, now, parsed, decision)` (the one phase from KubeRay's dual status).
  `sweeps`, `data_decide` the pure decisions of sweeps and TrainingData.
- `builders`, `data_builders` pure builders of the children (ConfigMap, RayJob).
- `config`, `api_calls` OperatorConfig from the environment; every API call made (for the ClusterRole).
- `bench`           `trainkit bench operator`.

Run it with `python -m trainkit_operator`.
"""

__all__ = ["api_calls", "builders", "config", "decide", "observe", "run_reconcile", "wiring"]
