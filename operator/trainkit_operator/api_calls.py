"""Every Kubernetes API call the operator makes: the Helm chart's ClusterRole must grant exactly these.

(verb, group, resource, subresource). "" is the core group. The integration tests compare this list
with the requests the API test server recorded while the operator ran, so it cannot drift.
"""

from __future__ import annotations

API_CALLS: tuple[tuple[str, str, str, str], ...] = (
    # kopf: watch the runs, keep handler progress + diff-base in annotations (patch), post Events.
    ("list", "trainkit.dev", "trainingruns", ""),
    ("watch", "trainkit.dev", "trainingruns", ""),
    ("patch", "trainkit.dev", "trainingruns", ""),
    # our reconcile: fresh read, then the status subresource.
    ("get", "trainkit.dev", "trainingruns", ""),
    ("patch", "trainkit.dev", "trainingruns", "status"),
    # children
    ("get", "ray.io", "rayjobs", ""),
    ("create", "ray.io", "rayjobs", ""),
    ("patch", "ray.io", "rayjobs", ""),
    ("list", "ray.io", "rayjobs", ""),  # kopf: watch RayJobs labelled trainkit.dev/run (fast status)
    ("watch", "ray.io", "rayjobs", ""),
    # the run's NetworkPolicy (created with the RayJob, garbage-collected with the run; never updated)
    ("create", "networking.k8s.io", "networkpolicies", ""),
    # spec ConfigMaps: immutable and named by their content's hash; a changed spec is a new one (never an
    # update or patch), the old ones go with their owner
    ("get", "", "configmaps", ""),
    ("create", "", "configmaps", ""),
    # the run's credentials Secret (by name; RBAC: resourceNames): its existence before the RayJob, then its
    # key, to read THAT run's progress/checkpoints/evals with it (the operator has no storage key of its own);
    # a TrainingData's storage Secret likewise, and its hub token Secret (only whether key HF_TOKEN is there)
    ("get", "", "secrets", ""),
    # why Ray pods are stuck (image pulls, unschedulable GPUs), only while Initializing (runs and prepare jobs)
    ("list", "", "pods", ""),
    # Events for transitions (kopf posts them)
    ("create", "", "events", ""),
    # why a run is stuck: KubeRay's Warning Events on a RayJob with no status (KubeRay 1.4 rejects so), and
    # Kueue's Workload of a queued RayJob (its "why not admitted" conditions)
    ("list", "", "events", ""),
    ("list", "kueue.x-k8s.io", "workloads", ""),
    # kopf observes CRDs (resources appearing/disappearing) and namespaces (to match --namespace patterns)
    ("list", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("watch", "apiextensions.k8s.io", "customresourcedefinitions", ""),
    ("list", "", "namespaces", ""),
    ("watch", "", "namespaces", ""),
    # watching the whole cluster: whether a run's namespace opted in to trainkit (its label), before the
    # operator creates anything there (decide.namespace_opt_in_error)
    ("get", "", "namespaces", ""),
    # the sweep controller (sweep_reconcile.py): kopf watches sweeps and keeps its annotations on them;
    # our reconcile reads a sweep fresh, writes its status and creates the runs it owns (listing them
    # by the trainkit.dev/sweep label is the trainingruns list above)
    ("list", "trainkit.dev", "trainingsweeps", ""),
    ("watch", "trainkit.dev", "trainingsweeps", ""),
    ("patch", "trainkit.dev", "trainingsweeps", ""),
    ("get", "trainkit.dev", "trainingsweeps", ""),
    ("patch", "trainkit.dev", "trainingsweeps", "status"),
    ("create", "trainkit.dev", "trainingruns", ""),
    # Not requests but an admission check (OwnerReferencesPermissionEnforcement, plugin/pkg/admission/gc):
    # RayJobs/ConfigMaps name their run, and runs their sweep, with blockOwnerDeletion: true, which needs
    # update on the owner's finalizers subresource.
    ("update", "trainkit.dev", "trainingruns", "finalizers"),
    ("update", "trainkit.dev", "trainingsweeps", "finalizers"),
    # the TrainingData controller (data_reconcile.py): kopf watches them and keeps its annotations on them;
    # our reconcile reads one fresh (also for a run naming it), writes its status, and owns its prepare
    # RayJob and ConfigMap (the rayjobs/configmaps calls above)
    ("list", "trainkit.dev", "trainingdatas", ""),
    ("watch", "trainkit.dev", "trainingdatas", ""),
    ("patch", "trainkit.dev", "trainingdatas", ""),
    ("get", "trainkit.dev", "trainingdatas", ""),
    ("patch", "trainkit.dev", "trainingdatas", "status"),
    ("update", "trainkit.dev", "trainingdatas", "finalizers"),
)

# kopf reads discovery documents (/api, /apis, /apis/<group>/<version>): non-resource URLs, which
# every authenticated user may read through the default system:discovery ClusterRole.
NON_RESOURCE_URLS = ("/api", "/api/*", "/apis", "/apis/*")

# Cluster-scoped peering (only when TRAINKIT_PEERING is set): kopf's ClusterKopfPeering objects.
PEERING_CALLS: tuple[tuple[str, str, str, str], ...] = (
    ("list", "kopf.dev", "clusterkopfpeerings", ""),
    ("watch", "kopf.dev", "clusterkopfpeerings", ""),
    ("patch", "kopf.dev", "clusterkopfpeerings", ""),
    ("list", "kopf.dev", "kopfpeerings", ""),
    ("watch", "kopf.dev", "kopfpeerings", ""),
    ("patch", "kopf.dev", "kopfpeerings", ""),
)
