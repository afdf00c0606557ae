"""Pure builders of the operator's children (ConfigMap, RayJob): no cluster, no I/O."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from trainkit.spec import load_run, parse_spec
from trainkit.spec.load import SpecError
from trainkit_operator import builders
from trainkit_operator.config import OperatorConfig

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "jobs" / "gpt2-70m-50-30-20.yaml"
UID = "0b7e5a52-1111-4c4c-9d9d-000000000001"


def seed_run(**spec_updates) -> dict:
    doc = yaml.safe_load(SEED.read_text())
    doc["metadata"].update({"namespace": "research", "uid": UID, "generation": 1, "resourceVersion": "7"})
    for dotted, value in spec_updates.items():
        node = doc["spec"]
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return doc


def built(run: dict | None = None, config: OperatorConfig | None = None):
    run = run or seed_run()
    spec, _ = parse_spec(run["spec"])
    config = config or OperatorConfig()
    return run, spec, builders.build_rayjob(run, spec, config), builders.build_configmap(run, spec, config)


def head(rj):
    return rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]


def workers(rj):
    return rj["spec"]["rayClusterSpec"]["workerGroupSpecs"]


def test_deterministic_name_labels_and_owner_reference():
    run, spec, rj, cm = built()
    assert rj["apiVersion"] == "ray.io/v1" and rj["kind"] == "RayJob"
    assert rj["metadata"]["name"] == "gpt2-70m-50-30-20"
    assert rj["metadata"]["namespace"] == "research"
    assert rj["metadata"]["labels"]["trainkit.dev/run"] == "gpt2-70m-50-30-20"
    for obj in (rj, cm):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "trainkit.dev/v1alpha1",
            "kind": "TrainingRun",
            "name": "gpt2-70m-50-30-20",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    # same inputs, same objects (the reconcile relies on it)
    _, _, rj2, cm2 = built()
    assert rj == rj2 and cm == cm2


def test_owner_reference_needs_a_uid():
    run = seed_run()
    del run["metadata"]["uid"]
    spec, _ = parse_spec(run["spec"])
    with pytest.raises(ValueError, match="no uid"):
        builders.build_rayjob(run, spec, OperatorConfig())


def test_gpu_worker_group_from_resources():
    run, spec, rj, _ = built()
    (group,) = workers(rj)
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 1
    pod = group["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"}
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert c["image"] == OperatorConfig().trainer_image
    # the head: CPU only, no GPU node selector, head resources from the spec defaults
    h = head(rj)
    assert "nodeSelector" not in h
    assert h["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert "nvidia.com/gpu" not in json.dumps(h["containers"][0]["resources"])


def test_resources_overrides_image_pull_secrets_and_fractional_cpus():
    run = seed_run()
    run["spec"]["resources"].update(
        {
            "workers": 4,
            "gpusPerWorker": 8,
            "cpusPerWorker": 0.5,
            "memoryPerWorker": "100Gi",
            "image": "registry.local/trainer:x",
            "imagePullSecrets": ["regcred"],
            "headCpus": 1.5,
        }
    )
    run["spec"]["training"]["globalBatchSize"] = 96
    _, _, rj, _ = built(run)
    (group,) = workers(rj)
    assert group["replicas"] == 4
    c = group["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "100Gi", "nvidia.com/gpu": "8"}
    assert c["image"] == head(rj)["containers"][0]["image"] == "registry.local/trainer:x"
    assert group["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert head(rj)["imagePullSecrets"] == [{"name": "regcred"}]
    assert head(rj)["containers"][0]["resources"]["limits"]["cpu"] == "1500m"


def test_cpu_only_workers_have_no_gpu_limit():
    run = seed_run()
    run["spec"]["resources"]["gpusPerWorker"] = 0
    _, _, rj, _ = built(run)
    assert "nvidia.com/gpu" not in workers(rj)[0]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_entrypoint_is_constant_and_spec_is_mounted_from_the_owned_configmap():
    run = seed_run()
    # A hostile-looking but schema-valid value must never reach a command line.
    run["spec"]["output"]["uri"] = "s3://trainkit-runs/x;rm -rf $HOME/"
    run2, spec, rj, cm = built(run)
    assert rj["spec"]["entrypoint"] == "python -m trainkit.jobs.train --spec /etc/trainkit/spec.json"
    assert "rm -rf" not in json.dumps(rj)
    # immutable, named by the hash of what it holds
    assert cm["metadata"]["name"] == f"gpt2-70m-50-30-20-spec-{builders.spec_hash(run2, spec)}" and cm["immutable"]
    for pod in (head(rj), workers(rj)[0]["template"]["spec"]):
        vol = next(v for v in pod["volumes"] if v["name"] == "trainkit-spec")
        assert vol["configMap"]["name"] == cm["metadata"]["name"]
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "trainkit-spec")
        assert mount == {"name": "trainkit-spec", "mountPath": "/etc/trainkit", "readOnly": True}
    doc = json.loads(cm["data"]["spec.json"])
    assert doc["spec"]["output"]["uri"] == "s3://trainkit-runs/x;rm -rf $HOME/"
    assert doc["spec"]["data"]["sources"][0]["name"] == "finepdfs"


def test_configmap_document_is_a_loadable_training_run(tmp_path):
    _, spec, _, cm = built()
    path = tmp_path / "spec.json"
    path.write_text(cm["data"]["spec.json"])
    loaded = load_run(path)  # read as JSON: exponents like 1e-08 stay numbers
    assert json.loads(cm["data"]["spec.json"])["spec"] == spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert loaded.spec == spec
    assert loaded.metadata.name == "gpt2-70m-50-30-20"


def test_kubray_job_fields_shutdown_backoff_deadline_suspend():
    run = seed_run(**{"scheduling.activeDeadlineSeconds": 86400, "scheduling.suspend": True})
    del run["spec"]["scheduling"]["queueName"]  # a run in a Kueue queue cannot ask for suspend
    _, _, rj, _ = built(run)
    s = rj["spec"]
    assert s["shutdownAfterJobFinishes"] is True
    assert s["backoffLimit"] == 2
    assert s["activeDeadlineSeconds"] == 86400
    assert s["suspend"] is True
    assert "clusterSelector" not in s  # Kueue rejects it
    _, _, rj, _ = built()
    assert rj["spec"]["suspend"] is False and "activeDeadlineSeconds" not in rj["spec"]


def test_kueue_queue_label_and_priority_forwarded():
    _, _, rj, _ = built(seed_run(**{"scheduling.priorityClassName": "research-high"}))
    assert rj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-training"
    for pod in (head(rj), workers(rj)[0]["template"]["spec"], rj["spec"]["submitterPodTemplate"]["spec"]):
        assert pod["priorityClassName"] == "research-high"
    assert "ray.io/scheduler-name" not in rj["metadata"]["labels"]


def test_no_queue_no_kueue_label():
    run = seed_run()
    del run["spec"]["scheduling"]["queueName"]
    _, _, rj, _ = built(run)
    assert "kueue.x-k8s.io/queue-name" not in rj["metadata"]["labels"]


def test_volcano_gang_labels():
    _, _, rj, _ = built(seed_run(**{"scheduling.volcanoQueue": "gang", "scheduling.priorityClassName": "p1"}))
    labels = rj["metadata"]["labels"]
    # what KubeRay's Volcano plugin reads; it ignores ray.io/scheduler-name (since v1.6) and gang-scheduling-enabled
    assert labels["volcano.sh/queue-name"] == "gang"
    assert labels["ray.io/priority-class-name"] == "p1"
    assert "ray.io/scheduler-name" not in labels and "ray.io/gang-scheduling-enabled" not in labels


def test_credentials_only_as_secret_key_refs_and_never_in_any_child():
    planted = [os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]]
    run = seed_run(**{"storage.endpoint": "http://minio.storage:9000", "storage.region": "eu-west-1"})
    _, _, rj, cm = built(run, OperatorConfig(default_storage_endpoint="http://other:9000"))
    text = json.dumps(rj) + json.dumps(cm)
    for value in planted:
        assert value not in text
    for pod in (head(rj), workers(rj)[0]["template"]["spec"]):
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"}
        assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert "value" not in env[key]
            assert env[key]["valueFrom"] == {"secretKeyRef": {"name": "trainkit-s3", "key": key, "optional": False}}
    # the submitter never gets credentials
    assert "env" not in rj["spec"]["submitterPodTemplate"]["spec"]["containers"][0]


def test_default_endpoint_and_secret_from_config():
    run = seed_run()
    del run["spec"]["storage"]
    _, _, rj, _ = built(
        run, OperatorConfig(default_storage_endpoint="http://minio:9000", default_credentials_secret="platform-s3")
    )
    env = {e["name"]: e for e in head(rj)["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "platform-s3"
    _, _, rj, _ = built(run)
    names = {e["name"] for e in head(rj)["containers"][0]["env"]}
    assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}  # pod identity (IRSA)


def test_user_env_forwarded_secrets_by_reference_reserved_names_refused():
    """Issue 13 hole 9: env from a Secret (secretKeyRef) was not supported, and AWS_ENDPOINT_URL_S3 in a run's env
    overrode the endpoint the operator set."""
    run = seed_run()
    run["spec"]["resources"]["env"] = [
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "WANDB_API_KEY", "secretKeyRef": {"name": "team-wandb", "key": "api-key"}},
    ]
    _, _, rj, cm = built(run)
    for pod in (head(rj), workers(rj)[0]["template"]["spec"]):
        env = pod["containers"][0]["env"]
        assert {"name": "NCCL_DEBUG", "value": "INFO"} in env
        assert {"name": "WANDB_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "team-wandb", "key": "api-key", "optional": False}}} in env  # fmt: skip
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "aws_profile",
                 "TRAINKIT_RUN_UID"):  # fmt: skip
        bad = seed_run()
        bad["spec"]["resources"]["env"] = [{"name": name, "value": "http://evil"}]
        with pytest.raises(SpecError, match=f"env var '{name}': names starting with AWS_ or TRAINKIT_ are set by"):
            parse_spec(bad["spec"])


def test_non_root_everywhere():
    _, _, rj, _ = built()
    pods = [head(rj), workers(rj)[0]["template"]["spec"], rj["spec"]["submitterPodTemplate"]["spec"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False


def test_mutable_patch_only_touches_mutable_fields():
    run, spec, rj, _ = built()
    current = copy.deepcopy(rj)
    current["status"] = {"jobDeploymentStatus": "Running"}
    assert builders.mutable_patch(rj, current, kueue_managed=True) == []
    run2 = seed_run(
        **{"scheduling.activeDeadlineSeconds": 3600, "scheduling.backoffLimit": 5, "scheduling.suspend": True}
    )
    del run2["spec"]["scheduling"]["queueName"]
    spec2, _ = parse_spec(run2["spec"])
    desired = builders.build_rayjob(run2, spec2, OperatorConfig())
    ops = builders.mutable_patch(desired, current, kueue_managed=True)
    paths = {o["path"] for o in ops}
    assert "/spec/backoffLimit" in paths and "/spec/activeDeadlineSeconds" in paths
    assert not any("priorityClassName" in p for p in paths)  # fixed once the cluster exists
    assert "/spec/suspend" not in paths  # Kueue owns suspend
    assert all(o["op"] in ("add", "remove") for o in ops)
    ops = builders.mutable_patch(desired, current, kueue_managed=False)
    assert {"op": "add", "path": "/spec/suspend", "value": True} in ops
    # applying the ops (RFC 6902) to `current` gives `desired`'s mutable values and nothing else changes
    import jsonpatch

    patched = jsonpatch.apply_patch(current, ops)
    assert builders.mutable_patch(desired, patched, kueue_managed=False) == []
    assert (
        patched["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]
        == current["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    )
    assert patched["metadata"]["labels"] == current["metadata"]["labels"]
    assert patched["metadata"]["annotations"][builders.SUSPENDED_BY_ANNOTATION] == builders.SUSPENDED_BY_SPEC
    # un-setting a field removes it; unsuspending what the spec suspended is allowed
    back = builders.mutable_patch(rj, patched, kueue_managed=False)
    assert {"op": "remove", "path": "/spec/activeDeadlineSeconds"} in back
    assert {"op": "add", "path": "/spec/suspend", "value": False} in back


def test_the_trainer_entrypoint_reads_the_configmap_spec(tmp_path):
    from trainkit.jobs.train import load_spec_file

    _, spec, _, cm = built()
    path = tmp_path / "spec.json"
    path.write_text(cm["data"]["spec.json"])
    loaded, name = load_spec_file(path)
    assert loaded == spec and name == "gpt2-70m-50-30-20"


def test_node_pool_defaults_from_the_operator_config_apply_only_when_the_run_sets_none():
    pool = OperatorConfig.from_env(
        {
            "TRAINKIT_NODE_SELECTOR": '{"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}',
            "TRAINKIT_TOLERATIONS": '[{"key": "gpu-pool", "operator": "Exists", "effect": "NoSchedule"}]',
        }
    )
    run = seed_run()
    del run["spec"]["resources"]["nodeSelector"], run["spec"]["resources"]["tolerations"]
    _, _, rj, _ = built(run, pool)
    pod = workers(rj)[0]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"] == [{"key": "gpu-pool", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeSelector" not in head(rj)
    # the run's own choice wins
    _, _, rj, _ = built(seed_run(), pool)
    pod = workers(rj)[0]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_ray_token_auth_is_asked_of_kuberay_and_never_carries_a_token():
    _, _, rj, cm = built()
    assert rj["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    text = json.dumps(rj) + json.dumps(cm)
    assert "RAY_AUTH_TOKEN" not in text and "auth_token" not in text  # KubeRay makes and injects the token
    _, _, open_rj, _ = built(config=OperatorConfig(ray_token_auth=False))  # KubeRay 1.4: no authOptions field
    assert "authOptions" not in open_rj["spec"]["rayClusterSpec"]
    with pytest.raises(ValueError, match=r"RAY_TOKEN_AUTH needs Ray >= 2\.52\.0"):
        OperatorConfig.from_env({"TRAINKIT_RAY_VERSION": "2.49.0"})
    assert OperatorConfig.from_env({"TRAINKIT_RAY_VERSION": "2.49.0", "TRAINKIT_RAY_TOKEN_AUTH": "false"})
    with pytest.raises(ValueError, match="TRAINKIT_RAY_TOKEN_AUTH must be true or false"):
        OperatorConfig.from_env({"TRAINKIT_RAY_TOKEN_AUTH": "maybe"})


def test_network_policy_selects_the_runs_pods_and_admits_only_them_and_kuberay():
    run, _, rj, _ = built()
    config = OperatorConfig.from_env(
        {"TRAINKIT_KUBERAY_NAMESPACE": "ray-system", "TRAINKIT_KUBERAY_POD_LABELS": "app=kr"}
    )
    np = builders.build_run_network_policy(run, config)
    assert np["metadata"]["name"] == f"{run['metadata']['name']}-ray-{UID[:8]}"
    assert np["metadata"]["namespace"] == "research"
    assert np["metadata"]["ownerReferences"][0]["uid"] == UID
    own = {"matchLabels": {builders.RUN_LABEL: run["metadata"]["name"]}}
    assert np["spec"]["podSelector"] == own and np["spec"]["policyTypes"] == ["Ingress"]
    same_run, kuberay = np["spec"]["ingress"]
    assert same_run == {"from": [{"podSelector": own}]}  # no namespaceSelector: this namespace only
    assert kuberay["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray-system"}},
            "podSelector": {"matchLabels": {"app": "kr"}},
        }
    ]
    assert kuberay["ports"] == [{"protocol": "TCP", "port": 8265}]
    # every pod of the RayJob is selected by it: head, workers, submitter
    for template in (
        rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"],
        workers(rj)[0]["template"],
        rj["spec"]["submitterPodTemplate"],
    ):
        assert template["metadata"]["labels"][builders.RUN_LABEL] == run["metadata"]["name"]


def test_the_decision_to_create_brings_the_network_policy_unless_disabled():
    from trainkit_operator import decide

    run, spec, _, _ = built()
    d = decide.plan_actions(run, spec, None, None, None, OperatorConfig())
    assert d.action == "create" and d.network_policy is not None
    off = decide.plan_actions(run, spec, None, None, None, OperatorConfig(network_policy=False))
    assert off.action == "create" and off.network_policy is None


def test_ray_pods_skip_rays_30_s_sigterm_drain_unless_the_run_asks_for_it():
    """Found by the real launch path: Ray 2.60's `ray start` drains its node for 30 s on SIGTERM, so every suspend,
    Kueue preemption and retry held the cluster (and its GPUs) 30 s after KubeRay deleted it."""
    _, _, rj, _ = built()
    for pod in (head(rj), workers(rj)[0]["template"]["spec"]):
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0"
    _, _, rj, _ = built(
        seed_run(**{"resources.env": [{"name": "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "value": "20"}]})
    )
    env = [e for e in head(rj)["containers"][0]["env"] if e["name"] == "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]
    assert env == [{"name": "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "value": "20"}]  # once, the run's
