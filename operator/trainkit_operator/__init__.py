"""trainkit's Kubernetes operator: TrainingRun (trainkit.dev/v1alpha1) -> KubeRay RayJob (ray.io/v1).

Layout (KubeRay style: API types apart from controllers, children built by pure functions):

- `config`    OperatorConfig, read once from the environment.
- `builders`  pure `build_configmap(run, spec)` and `build_rayjob(run, spec, config)`.
- `decide`    pure `summarize(...)` (the one phase derived from KubeRay's dual status) and `plan_actions(...)`
              (what the reconcile must do: create, update mutable fields, refuse, nothing).
- `observe`   reading progress.json, checkpoints and eval summaries from object storage.
- `handlers`  thin kopf handlers around ONE idempotent `reconcile`; `register(registry, config)`.
- `api_calls` every Kubernetes API call the operator makes (for the Helm chart's ClusterRole).
- `bench`     `trainkit bench operator`.

Run it with `python -m trainkit_operator`.
"""

__all__ = ["api_calls", "builders", "config", "decide", "handlers", "observe"]
