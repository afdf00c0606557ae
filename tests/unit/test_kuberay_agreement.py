"""Where trainkit disagreed with real KubeRay and Kueue (issue 12), one test per disagreement.

Each test fails on the behaviour before the fix. The upstream facts they encode are in
/work/shared/REFERENCES.md ("KubeRay RayJob", "Kueue with RayJob") and cited per test.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from trainkit.spec import parse_spec
from trainkit_operator import builders
from trainkit_operator.config import OperatorConfig

from test_operator_builders import built, head, seed_run, workers

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ 7. Volcano: emit what the plugin reads
def test_7_volcano_labels_are_the_ones_kuberays_volcano_plugin_reads():
    _, _, rj, _ = built(seed_run(**{"scheduling.volcanoQueue": "gang", "scheduling.priorityClassName": "p1"}))
    labels = rj["metadata"]["labels"]
    assert labels["volcano.sh/queue-name"] == "gang"
    assert labels["ray.io/priority-class-name"] == "p1"
    assert "ray.io/scheduler-name" not in labels  # not read since KubeRay v1.6
    assert "ray.io/gang-scheduling-enabled" not in labels  # never read by the Volcano plugin
    # the install setting that makes KubeRay gang-schedule at all is documented next to the field
    assert "batchScheduler.name" in (REPO / "docs" / "install.md").read_text()


# ------------------------------------------------------------------ 9. the head stays off GPU nodes
def test_9_head_advertises_no_gpus_and_does_not_tolerate_the_gpu_taint():
    _, _, rj, _ = built()
    params = rj["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]
    assert params["num-cpus"] == "0" and params["num-gpus"] == "0"
    assert "tolerations" not in head(rj)
    # the workers keep the run's tolerations: they are meant for the GPU pool
    assert workers(rj)[0]["template"]["spec"]["tolerations"]
    # the same with the node pool's tolerations from the operator's config
    run = seed_run()
    del run["spec"]["resources"]["tolerations"]
    pool = OperatorConfig(
        default_tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    )
    _, _, rj, _ = built(run, pool)
    assert "tolerations" not in head(rj)
    assert workers(rj)[0]["template"]["spec"]["tolerations"] == list(pool.default_tolerations)


# ------------------------------------------------------------------ 11. Ray pods outlive the job a while
def test_11_finished_clusters_are_kept_for_a_configurable_ttl():
    _, _, rj, _ = built()
    assert rj["spec"]["shutdownAfterJobFinishes"] is True
    assert rj["spec"]["ttlSecondsAfterFinished"] == OperatorConfig().ray_ttl_seconds_after_finished > 0
    cfg = OperatorConfig.from_env({"TRAINKIT_RAY_TTL_SECONDS_AFTER_FINISHED": "0"})
    _, _, rj, _ = built(config=cfg)
    assert rj["spec"]["ttlSecondsAfterFinished"] == 0
    for bad in ("-1", "ten"):
        with pytest.raises(ValueError, match="TRAINKIT_RAY_TTL_SECONDS_AFTER_FINISHED"):
            OperatorConfig.from_env({"TRAINKIT_RAY_TTL_SECONDS_AFTER_FINISHED": bad})


def test_11_the_chart_passes_its_ttl_value_to_the_operator():
    from support.helm import one, render

    docs = render(sets={"trainer.ttlSecondsAfterFinished": 1800})
    env = {
        e["name"]: e.get("value") for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TRAINKIT_RAY_TTL_SECONDS_AFTER_FINISHED"] == "1800"
    assert OperatorConfig.from_env(env).ray_ttl_seconds_after_finished == 1800


# ------------------------------------------------------------------ 12. one trainer image name everywhere
def test_12_the_operators_default_trainer_image_is_the_charts_and_the_jobs():
    chart = yaml.safe_load((REPO / "charts" / "trainkit" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "trainkit" / "values.yaml").read_text())
    chart_image = (
        f"{values['trainer']['image']['repository']}:{values['trainer']['image']['tag'] or chart['appVersion']}"
    )
    assert OperatorConfig().trainer_image == chart_image
    for job in sorted((REPO / "jobs").glob("prepare-*.yaml")):
        for doc in yaml.safe_load_all(job.read_text()):
            for c in _containers(doc):
                if "image" in c:  # (KubeRay's default submitter, when none is given, is checked below)
                    assert c["image"] == chart_image, (job.name, c["name"])


def _pod_specs(doc: dict | None) -> list[dict]:
    """Every pod spec a RayJob / Job / Pod document makes: a RayJob's head, workers and its submitter."""
    if not doc:
        return []
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "Pod":
        return [spec]
    if kind == "RayJob":
        cluster = spec["rayClusterSpec"]
        pods = [cluster["headGroupSpec"]["template"]["spec"]]
        pods += [g["template"]["spec"] for g in cluster.get("workerGroupSpecs") or []]
        # no submitterPodTemplate: KubeRay creates a default submitter pod with no securityContext at all
        pods.append(
            (spec.get("submitterPodTemplate") or {}).get("spec") or {"containers": [{"name": "default-submitter"}]}
        )
        return pods
    return [spec["template"]["spec"]] if "template" in spec else []


def _containers(doc: dict | None) -> list[dict]:
    return [c for pod in _pod_specs(doc) for c in (pod.get("initContainers") or []) + pod["containers"]]


# Pod Security Standard "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards): what the
# admission controller checks, pod-level settings counting for containers that set none.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for v in pod.get("volumes") or []:
        if not set(v) - {"name"} <= RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']}")
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        csc = c.get("securityContext") or {}
        name = c["name"]
        if csc.get("privileged"):
            out.append(f"{name}: privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation != false")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{name}: capabilities.drop lacks ALL")
        if set((csc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add")
        if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile")
    return out


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "jobs").glob("prepare-*.yaml")))
def test_12_prepare_jobs_pass_pod_security_restricted(path):
    for doc in yaml.safe_load_all((REPO / path).read_text()):
        pods = _pod_specs(doc)
        assert pods, path
        for pod in pods:
            assert restricted_violations(pod) == [], path


def test_12_the_restricted_check_has_teeth_and_the_operators_rayjob_passes_it():
    _, _, rj, _ = built()
    assert all(restricted_violations(pod) == [] for pod in _pod_specs(rj))
    loose = copy.deepcopy(rj)
    del loose["spec"]["submitterPodTemplate"]
    assert restricted_violations(_pod_specs(loose)[-1])
    head_pod = _pod_specs(rj)[0]
    head_pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert restricted_violations(head_pod) == ["ray-head: allowPrivilegeEscalation != false"]


# ------------------------------------------------------------------ 12. cluster runs need shared storage
def test_12_local_uris_are_refused_for_cluster_runs_naming_the_field():
    from trainkit_operator import decide

    spec, _ = parse_spec(seed_run()["spec"])
    assert decide.cluster_spec_error(spec) is None
    run = seed_run(**{"output.uri": "runs/quickstart"})
    run["spec"]["data"]["sources"][1]["uri"] = "/data/shards/web"
    spec, _ = parse_spec(run["spec"])  # fine for `trainkit train` on one machine...
    msg = decide.cluster_spec_error(spec)  # ...but no Ray pod shares a local folder
    assert msg is not None
    assert "spec.output.uri 'runs/quickstart'" in msg and "spec.data.sources[1].uri '/data/shards/web'" in msg
    assert "spec.data.sources[0]" not in msg


# ------------------------------------------------------------------ 1. never unsuspend what Kueue suspended
def _no_queue(**updates) -> dict:
    run = seed_run(**updates)
    del run["spec"]["scheduling"]["queueName"]
    return run


def _cm(run: dict) -> dict:
    spec, _ = parse_spec(run["spec"])
    return builders.build_configmap(run, spec, OperatorConfig())


def test_1_a_rayjob_suspended_by_kueue_without_a_queue_label_is_never_unsuspended():
    """Kueue with manageJobsWithoutQueueName suspends a RayJob that names no queue (ApplyDefaultForSuspend)."""
    from trainkit_operator import decide

    run = _no_queue()
    spec, _ = parse_spec(run["spec"])
    rj = builders.build_rayjob(run, spec, OperatorConfig())
    rj["spec"]["suspend"] = True  # Kueue's webhook, not us: no trainkit.dev/suspended-by annotation
    rj["status"] = {"jobDeploymentStatus": "Suspended"}
    d = decide.plan_actions(run, spec, None, rj, _cm(run), OperatorConfig())
    assert not any(op["path"] == "/spec/suspend" for op in d.patch), d
    # every timer tick decides the same: the operator and Kueue never fight
    assert decide.plan_actions(run, spec, None, rj, _cm(run), OperatorConfig()).patch == d.patch
    st = decide.summarize(
        run, decide.Observation(rayjob=rj), "2026-12-03T00:00:00Z", decide.SpecView(spec=spec), decision=d
    )
    assert st.phase == "Suspended" and st.reason == "SuspendedExternally" and "manageJobsWithoutQueueName" in st.message


def test_1_the_runs_own_suspend_is_still_undone_by_the_run():
    from trainkit_operator import decide

    held = _no_queue(**{"scheduling.suspend": True})
    spec, _ = parse_spec(held["spec"])
    rj = builders.build_rayjob(held, spec, OperatorConfig())
    assert rj["metadata"]["annotations"][builders.SUSPENDED_BY_ANNOTATION] == builders.SUSPENDED_BY_SPEC
    resumed = _no_queue()
    d = decide.plan_actions(resumed, parse_spec(resumed["spec"])[0], None, rj, _cm(held), OperatorConfig())
    assert {"op": "add", "path": "/spec/suspend", "value": False} in d.patch
    assert {"op": "remove", "path": "/metadata/annotations/trainkit.dev~1suspended-by"} in d.patch


# ------------------------------------------------------------------ 3. KubeRay values we do not know
@pytest.mark.parametrize("field,value", [("jobDeploymentStatus", "Quarantined"), ("jobStatus", "PAUSED")])
def test_3_an_unknown_kuberay_value_is_kept_verbatim_and_never_crashes(field, value):
    from trainkit_operator import decide

    run = seed_run()
    spec, plan = parse_spec(run["spec"])
    rj = builders.build_rayjob(run, spec, OperatorConfig())
    rj["status"] = {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}
    running = decide.summarize(
        run,
        decide.Observation(rayjob=rj),
        "2026-12-03T00:00:00Z",
        decide.SpecView(spec=spec, total_steps=plan.total_steps),
        decision=decide.Decision("none"),
    )
    assert running.phase == "Running"
    run = copy.deepcopy(run)
    run["status"] = decide.status_patch(running)
    rj["status"][field] = value
    st = decide.summarize(
        run,
        decide.Observation(rayjob=rj),
        "2026-12-03T00:01:00Z",
        decide.SpecView(spec=spec, total_steps=plan.total_steps),
        decision=decide.Decision("none"),
    )
    assert st.phase == "Running"  # the last known phase, not a guess and not terminal
    assert st.reason == f"Unknown{field[0].upper() + field[1:]}" and repr(value) in st.message
    assert decide.status_patch(st)[field] == value  # mirrored verbatim
    # the CRD lets the API server store it (no closed enum)
    from trainkit.spec.crd import training_run_crd

    status_schema = training_run_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "enum" not in status_schema["properties"][field]


def test_3_the_phase_table_has_no_branch_for_values_kuberay_never_emits():
    import inspect

    from trainkit_operator import decide

    source = inspect.getsource(decide.derive_phase)
    assert '"Scheduling"' not in source.replace('"Scheduling"/"Scheduled"', "") and '"Scheduled",' not in source
    assert decide.derive_phase("", "Scheduling")[1] == "UnknownJobDeploymentStatus"


# ------------------------------------------------------------------ 4. suspend + queueName
def test_4_suspend_with_a_kueue_queue_is_refused_by_the_models_and_the_crd():
    from support.openapi import check_cel
    from trainkit.spec.crd import training_run_schema
    from trainkit.spec.load import SpecError

    run = seed_run(**{"scheduling.suspend": True})
    with pytest.raises(SpecError, match="suspend cannot be combined with queueName"):
        parse_spec(run["spec"])
    issues = check_cel(training_run_schema(), run)
    assert any("queueName" in str(i) for i in issues), issues
    assert check_cel(training_run_schema(), _no_queue(**{"scheduling.suspend": True})) == []


# ------------------------------------------------------------------ 5. priorityClassName is fixed at start
def test_5_a_priority_class_edit_after_start_is_refused_not_shown_as_applied():
    """KubeRay disregards rayClusterSpec changes once the cluster exists; Kueue fixes a Workload's priority."""
    from trainkit_operator import decide

    run = seed_run()
    spec, _ = parse_spec(run["spec"])
    rj = builders.build_rayjob(run, spec, OperatorConfig())
    rj["status"] = {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}
    edited = seed_run(**{"scheduling.priorityClassName": "urgent"})
    d = decide.plan_actions(edited, parse_spec(edited["spec"])[0], None, rj, _cm(run), OperatorConfig())
    assert d.action == "refuse" and d.refused == ("spec.scheduling.priorityClassName",) and d.patch == []
    assert "spec.scheduling.priorityClassName" not in decide.MUTABLE_SPEC_FIELDS
    text = (REPO / "docs" / "operator.md").read_text()
    assert "priorityClassName" in text.split("**Edits after start.**")[1].split("\n- **")[0]
    assert "Disregard" in text or "disregards" in text


# ------------------------------------------------------------------ 2. blockOwnerDeletion needs finalizers
@pytest.mark.parametrize("values", [None, {"watch": {"scope": "namespaced", "namespaces": ["ml"]}}])
def test_2_rbac_lets_the_operator_set_block_owner_deletion_on_its_children(values):
    """OwnerReferencesPermissionEnforcement: an ownerReference with blockOwnerDeletion needs `update` on the
    owner's finalizers, else every child create is a 403 (kueue#1485)."""
    from support.helm import allows, by_kind, render
    from trainkit_operator import sweeps

    _, _, rj, cm = built()
    assert rj["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert cm["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert "blockOwnerDeletion" in Path(sweeps.__file__).read_text()  # a sweep's runs point at the sweep so
    docs = render(values=values)
    roles = by_kind(docs, "Role") or by_kind(docs, "ClusterRole")
    for owner in ("trainingruns", "trainingsweeps"):
        assert allows(roles, "update", "trainkit.dev", owner, "finalizers", None), owner
