"""The Helm chart, rendered and linted by the real helm binary and validated by kubernetes-validate.

Variants: default values, every option on (cluster-wide and namespaced), peering off, no credentials Secret.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from support.helm import CHART, by_kind, lint, one, render, render_notes, template

CI = CHART / "ci"
VARIANTS = {
    "default": {},
    "all-options-cluster": {"values_files": [CI / "all-options-values.yaml"]},
    "all-options-namespaced": {"values_files": [CI / "namespaced-values.yaml"]},
    "peering-off": {"sets": {"peering.enabled": False}},
    "no-credentials-secret": {"sets": {"storage.credentialsSecret": ""}},
}
# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest schemas on hand.
K8S_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]


def deployment(docs):
    return one(docs, "Deployment")


def container(docs):
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return c


def env_of(docs) -> dict:
    return {e["name"]: e for e in container(docs)["env"]}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
    return request.param, VARIANTS[request.param], render(**VARIANTS[request.param])


def test_lint_strict_passes(variant):
    name, kwargs, _ = variant
    values = None
    if "values_files" in kwargs:
        values = yaml.safe_load(kwargs["values_files"][0].read_text())
    proc = lint(values=values, sets=kwargs.get("sets"))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout
    assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


def test_lint_strict_fails_on_a_broken_value():
    # The lint test above means something: lint --strict does fail on a bad value.
    proc = lint(sets={"watch.scope": "everywhere"}, check=False)
    assert proc.returncode != 0
    assert "scope" in proc.stdout + proc.stderr


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_every_rendered_manifest_passes_kubernetes_validate_strict(variant, k8s):
    name, _, docs = variant
    crds = {
        f"{c['spec']['group']}/{v['name']}:{c['spec']['names']['kind']}": v["schema"]["openAPIV3Schema"]
        for c in by_kind(docs, "CustomResourceDefinition")
        for v in c["spec"]["versions"]
    }
    checked = 0
    for doc in docs:
        key = f"{doc['apiVersion']}:{doc['kind']}"
        if key in crds:
            # kubernetes-validate skips custom resources: check those against the chart's own CRD schema.
            jsonschema.validate(
                {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}, crds[key]
            )
        else:
            kubernetes_validate.validate(doc, k8s, strict=True)
        checked += 1
    assert checked == len(docs) >= 6


def test_kubernetes_validate_cli_strict_on_the_rendered_chart(tmp_path):
    """The CLI as a user would run it, on the default render (exit 0); and it does catch a broken Deployment."""
    import subprocess
    import sys

    docs = render()
    builtins = [d for d in docs if not d["apiVersion"].startswith("kopf.dev/")]
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump_all(builtins))
    cli = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    proc = subprocess.run(cli + [str(good)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    bad_dep = json.loads(json.dumps(deployment(docs)))
    bad_dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True  # typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(bad_dep))
    proc = subprocess.run(cli + [str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "readOnlyRootFileSystem" in proc.stdout + proc.stderr


def test_crds_are_the_generated_ones():
    from trainkit.spec.crd import all_crds

    docs = render()
    rendered = {c["metadata"]["name"]: c for c in by_kind(docs, "CustomResourceDefinition")}
    for crd in all_crds():
        assert rendered[crd["metadata"]["name"]] == json.loads(json.dumps(crd))
    assert set(rendered) == {c["metadata"]["name"] for c in all_crds()} | {
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


def test_deployment_one_replica_recreate_hardened(variant):
    _, _, docs = variant
    dep = deployment(docs)
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place is an emptyDir on /tmp.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in vols["tmp"]
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    for sa in by_kind(docs, "ServiceAccount"):
        assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_probes_hit_kopf_liveness_endpoint(variant):
    _, _, docs = variant
    c = container(docs)
    (liveness,) = [a for a in c["args"] if a.startswith("--liveness=")]
    port = int(liveness.split(":")[-1].split("/")[0])
    assert liveness == f"--liveness=http://0.0.0.0:{port}/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["health"] == port
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_command_is_exec_form_without_a_shell(variant):
    _, _, docs = variant
    c = container(docs)
    assert c["command"] == ["python", "-m", "trainkit_operator"]
    joined = " ".join(c["command"] + c["args"])
    for shellism in ("sh -c", "bash", "$(", "`", ";", "&&", "|"):
        assert shellism not in joined
    assert all(a.startswith("--") for a in c["args"])


def test_cluster_scope_uses_cluster_role_and_all_namespaces():
    docs = render()
    env = env_of(docs)
    assert "TRAINKIT_NAMESPACES" not in env  # the operator watches the whole cluster without it
    cr = one(docs, "ClusterRole")
    crb = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cr["metadata"]["name"],
    }
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "trainkit-system"}
    ]
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    peering = one(docs, "ClusterKopfPeering")
    assert env["TRAINKIT_PEERING"]["value"] == peering["metadata"]["name"]
    assert not by_kind(docs, "KopfPeering")


def test_namespaced_scope_uses_a_role_per_namespace_and_nothing_cluster_wide():
    docs = render(values_files=[CI / "namespaced-values.yaml"])
    watched = ["ml-research", "ml-prod", "default"]
    assert env_of(docs)["TRAINKIT_NAMESPACES"]["value"] == ",".join(watched)
    # Cluster-wide: only reading CRDs and namespaces (which kopf follows), nothing namespaced.
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
    }
    assert {v for rule in cluster_role["rules"] for v in rule["verbs"]} == {"list", "watch"}
    (crb,) = by_kind(docs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert not by_kind(docs, "ClusterKopfPeering")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == sorted(watched)
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == sorted(watched)
    for rb in by_kind(docs, "RoleBinding"):
        assert rb["roleRef"]["kind"] == "Role"
        # serviceAccount.create is false here: the binding names the existing account, none is created.
        assert rb["subjects"] == [
            {"kind": "ServiceAccount", "name": "existing-operator-sa", "namespace": "trainkit-system"}
        ]
    assert not by_kind(docs, "ServiceAccount")
    assert deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "existing-operator-sa"


def test_namespaced_scope_defaults_to_the_release_namespace():
    docs = render(sets={"watch.scope": "namespaced"}, namespace="ml-team")
    assert [r["metadata"]["namespace"] for r in by_kind(docs, "Role")] == ["ml-team"]
    assert env_of(docs)["TRAINKIT_NAMESPACES"]["value"] == "ml-team"


def test_peering_off_runs_standalone_without_peering_objects_or_rights():
    docs = render(sets={"peering.enabled": False})
    assert "TRAINKIT_PEERING" not in env_of(docs)  # the operator then runs standalone
    assert not by_kind(docs, "ClusterKopfPeering") and not by_kind(docs, "KopfPeering")
    rules = one(docs, "ClusterRole")["rules"]
    assert not [r for r in rules if "kopf.dev" in r["apiGroups"]]


def _secret_rules(docs):
    return [r for r in one(docs, "ClusterRole")["rules"] if "secrets" in r["resources"]]


def test_secrets_are_readable_only_by_name():
    (rule,) = _secret_rules(render())
    assert rule == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["trainkit-s3"], "verbs": ["get"]}
    (rule,) = _secret_rules(render(sets={"rbac.secretNames": "{team-a,trainkit-s3}"}))
    assert rule["resourceNames"] == ["trainkit-s3", "team-a"]
    (rule,) = _secret_rules(render(sets={"rbac.allSecretNames": True}))
    assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    assert _secret_rules(render(sets={"storage.credentialsSecret": ""})) == []


def test_no_wildcards_in_any_rbac_rule(variant):
    _, _, docs = variant
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"], rule)
            assert not any("*" in r for r in rule["resources"])
            assert "nonResourceURLs" not in rule
            # Secrets: read one by name only, never list or watch them all.
            if "secrets" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get"}, rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_values_reach_the_operator_environment():
    from trainkit_operator.config import OperatorConfig

    docs = render(values_files=[CI / "all-options-values.yaml"])
    env = env_of(docs)
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    config = OperatorConfig.from_env(plain)  # the operator's own parser accepts what the chart sets
    assert config.trainer_image == (
        "registry.example.com/ml/trainkit-trainer@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
    )
    assert config.image_pull_policy == "Always"
    assert config.ray_version == "2.60.0"
    assert config.namespaces == ()
    assert config.peering_name == "trainkit-prod"
    assert config.timer_interval == 15
    assert config.default_storage_endpoint == "https://minio.storage.svc.cluster.local:9000"
    assert config.default_credentials_secret == "trainkit-s3-prod"
    assert config.service_account == "ray-workers"
    assert config.extra_labels == {"cost-center": "ml-research", "team.example.com/owner": "pretraining"}
    assert json.loads(env["TRAINKIT_NODE_SELECTOR"]["value"]) == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "cloud.google.com/gke-nodepool": "h100-pool",
    }
    tolerations = json.loads(env["TRAINKIT_TOLERATIONS"]["value"])
    assert tolerations[1] == {
        "key": "spot",
        "operator": "Equal",
        "value": "true",
        "effect": "NoExecute",
        "tolerationSeconds": 600,
    }
    assert config.credentials_mode == "workloadIdentity"
    assert config.allowed_endpoints == ("https://s3.eu-west-1.amazonaws.com",)
    assert config.hf_endpoint == "https://hf-mirror.internal.example"  # the prepare pods' HF_ENDPOINT
    assert (config.read_max_bytes, config.read_timeout, config.reads_deadline, config.read_workers) == (
        2097152,
        3.0,
        12.0,
        8,
    )
    # The operator has no storage key of its own (it reads a run's artifacts with that run's Secret),
    # and no endpoint variable the SDK would pick up on its own.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} & set(env)
    assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    c = container(docs)
    assert c["image"] == (
        "registry.example.com/ml/trainkit-operator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert c["imagePullPolicy"] == "Always"
    assert "--verbose" in c["args"] and "--liveness=http://0.0.0.0:9090/healthz" in c["args"]
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane-services": "true"}
    assert deployment(docs)["spec"]["template"]["metadata"]["labels"]["team"] == "ml-platform"
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "trainkit-operator"
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/trainkit-operator")


def test_namespaced_values_parse_in_the_operator():
    from trainkit_operator.config import OperatorConfig

    env = env_of(render(values_files=[CI / "namespaced-values.yaml"]))
    config = OperatorConfig.from_env({k: e["value"] for k, e in env.items() if "value" in e})
    assert config.namespaces == ("ml-research", "ml-prod", "default")


def test_default_images_follow_the_chart_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    docs = render()
    assert container(docs)["image"] == f"ghcr.io/trainkit/trainkit-operator:{chart['appVersion']}"
    assert env_of(docs)["TRAINKIT_TRAINER_IMAGE"]["value"] == f"ghcr.io/trainkit/trainkit-trainer:{chart['appVersion']}"
    # Workers tolerate the usual GPU taint by default.
    assert json.loads(env_of(docs)["TRAINKIT_TOLERATIONS"]["value"]) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_service_account_token_is_mounted_only_into_the_operator_pod():
    docs = render()
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    assert deployment(docs)["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_create_false_without_a_name_fails_with_a_clear_message():
    proc = template(sets={"serviceAccount.create": False}, check=False)
    assert proc.returncode != 0
    assert "serviceAccount.name must name an existing ServiceAccount" in proc.stderr


def test_notes_tell_the_user_what_to_do_next():
    notes = render_notes()
    assert "rollout status deployment/tk-trainkit" in notes
    assert "kubectl get crd rayjobs.ray.io" in notes
    assert "create secret generic trainkit-s3" in notes
    assert '"$AWS_ACCESS_KEY_ID"' in notes  # from the user's environment, never from values
    assert "kubectl get trainingruns" in notes and "docs/install.md" in notes
    assert "jobs/kueue-setup.yaml" in notes
    notes = render_notes(
        sets={"watch.scope": "namespaced", "watch.namespaces": "{a,b}", "storage.credentialsSecret": ""}
    )
    assert "watches TrainingRuns in: a, b" in notes
    assert "create secret" not in notes and "workload identity" in notes


def _chart_settings() -> list[str]:
    names = set()
    for f in (CI / "all-options-values.yaml", CI / "namespaced-values.yaml"):
        names |= {n for n in env_of(render(values_files=[f])) if n.startswith("TRAINKIT_")}
    return sorted(names)


@pytest.mark.parametrize("name", _chart_settings())
def test_every_setting_the_chart_passes_is_read_by_the_operator(name):
    """A value the operator ignores would be a lie in values.yaml: each TRAINKIT_* variable must be parsed."""
    from trainkit_operator import config

    source = Path(config.__file__).read_text()
    suffix = name.removeprefix(config.ENV_PREFIX)
    assert f'p + "{suffix}"' in source or f'"{name}"' in source, f"{name} is not read by OperatorConfig.from_env"
