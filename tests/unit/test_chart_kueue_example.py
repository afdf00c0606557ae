"""jobs/kueue-setup.yaml fits the seed run: its LocalQueue is the one the seed names, and the RayJob the
operator builds for the seed (trainkit_operator.builders, the real builder) is admitted by the ClusterQueue.

Kueue is not running here. `admit` below is a small model of Kueue's flavor assignment for one workload
(flavors tried in order per pod set; a flavor fits when its remaining quota covers the pod set, its node
labels agree with the pod set's nodeSelector and the pod set's tolerations plus the flavor's own `tolerations`
tolerate its taints, as flavorassigner.go checks them), enough to show that
the head lands on CPU nodes, the workers on the GPU pool, and that the quota holds the whole Ray cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "jobs" / "kueue-setup.yaml"
SEED = REPO / "jobs" / "gpt2-70m-50-30-20.yaml"
UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def qty(v) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(v))
    assert m, v
    return float(m.group(1)) * UNITS[m.group(2)]


def docs() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in yaml.safe_load_all(SETUP.read_text()):
        if d:
            out.setdefault(d["kind"], []).append(d)
    return out


def seed_rayjob() -> dict:
    from trainkit.spec.load import parse_spec
    from trainkit_operator import builders
    from trainkit_operator.config import OperatorConfig

    run = yaml.safe_load(SEED.read_text())
    run["metadata"].update(namespace="default", uid="0000-seed")
    spec, _ = parse_spec(run["spec"])
    return builders.build_rayjob(run, spec, OperatorConfig())


def pod_sets(rayjob: dict) -> list[dict]:
    cs = rayjob["spec"]["rayClusterSpec"]
    sets = [("head", 1, cs["headGroupSpec"]["template"]["spec"])]
    sets += [(g["groupName"], g.get("replicas", 1), g["template"]["spec"]) for g in cs["workerGroupSpecs"]]
    if "submitterPodTemplate" in rayjob["spec"]:
        sets.append(("submitter", 1, rayjob["spec"]["submitterPodTemplate"]["spec"]))
    out = []
    for name, count, pod in sets:
        req: dict[str, float] = {}
        for c in pod["containers"]:
            for k, v in (c.get("resources", {}).get("requests") or {}).items():
                req[k] = req.get(k, 0) + qty(v)
        out.append(
            {
                "name": name,
                "count": count,
                "requests": req,
                "nodeSelector": pod.get("nodeSelector") or {},
                "tolerations": pod.get("tolerations") or [],
            }
        )
    return out


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, taint["effect"]):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value"):
            return True
    return False


def admit(cluster_queue: dict, flavors: dict[str, dict], sets: list[dict]) -> dict[str, str]:
    """Flavor per pod set, or AssertionError naming the pod set that fits nowhere."""
    (group,) = cluster_queue["spec"]["resourceGroups"]
    remaining = {(f["name"], r["name"]): qty(r["nominalQuota"]) for f in group["flavors"] for r in f["resources"]}
    chosen = {}
    for ps in sets:
        for f in group["flavors"]:
            spec = flavors[f["name"]].get("spec") or {}
            labels_ok = all(ps["nodeSelector"].get(k, v) == v for k, v in (spec.get("nodeLabels") or {}).items())
            tols = ps["tolerations"] + (spec.get("tolerations") or [])
            taints_ok = all(tolerates(tols, t) for t in spec.get("nodeTaints") or [])
            need = {r: ps["requests"].get(r, 0) * ps["count"] for r in group["coveredResources"]}
            quota_ok = all(remaining[(f["name"], r)] >= n for r, n in need.items())
            if labels_ok and taints_ok and quota_ok:
                for r, n in need.items():
                    remaining[(f["name"], r)] -= n
                chosen[ps["name"]] = f["name"]
                break
        else:
            raise AssertionError(f"pod set {ps['name']} {ps['requests']} fits no flavor")
    return chosen


def test_local_queue_is_the_one_the_seed_run_names():
    d = docs()
    seed = yaml.safe_load(SEED.read_text())
    (lq,) = d["LocalQueue"]
    assert lq["metadata"] == {"name": seed["spec"]["scheduling"]["queueName"], "namespace": "default"}
    (cq,) = d["ClusterQueue"]
    assert lq["spec"]["clusterQueue"] == cq["metadata"]["name"]
    names = {f["metadata"]["name"] for f in d["ResourceFlavor"]}
    assert {f["name"] for f in cq["spec"]["resourceGroups"][0]["flavors"]} == names
    # v1beta2 is Kueue's stored version; v1beta1 is deprecated since Kueue v0.16
    assert all(x["apiVersion"] == "kueue.x-k8s.io/v1beta2" for xs in d.values() for x in xs)


def test_gpu_flavor_describes_the_seed_runs_node_pool():
    d = docs()
    seed = yaml.safe_load(SEED.read_text())["spec"]["resources"]
    gpu = next(f for f in d["ResourceFlavor"] if (f.get("spec") or {}).get("nodeLabels"))
    assert gpu["spec"]["nodeLabels"].items() <= seed["nodeSelector"].items()
    for taint in gpu["spec"]["nodeTaints"]:
        assert tolerates(seed["tolerations"], taint)
    cq = d["ClusterQueue"][0]
    assert "nvidia.com/gpu" in cq["spec"]["resourceGroups"][0]["coveredResources"]


def test_the_seed_rayjob_is_queued_on_this_queue_and_admitted_head_on_cpu_workers_on_gpus():
    rayjob = seed_rayjob()
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == docs()["LocalQueue"][0]["metadata"]["name"]
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True  # Kueue's webhook requires it
    d = docs()
    flavors = {f["metadata"]["name"]: f for f in d["ResourceFlavor"]}
    chosen = admit(d["ClusterQueue"][0], flavors, pod_sets(rayjob))
    assert chosen["head"] == "cpu" and chosen["submitter"] == "cpu"
    workers = [n for n in chosen if n not in ("head", "submitter")]
    assert workers and all(chosen[w] == "h100-80gb" for w in workers)


def test_the_model_of_admission_has_teeth():
    """Twice the GPUs the pool has: the workers fit no flavor."""
    import copy

    rayjob = seed_rayjob()
    big = copy.deepcopy(rayjob)
    big["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = 16
    d = docs()
    flavors = {f["metadata"]["name"]: f for f in d["ResourceFlavor"]}
    try:
        admit(d["ClusterQueue"][0], flavors, pod_sets(big))
    except AssertionError as e:
        assert "fits no flavor" in str(e)
    else:
        raise AssertionError("16 GPU workers were admitted on an 8-GPU quota")


def test_a_run_that_sets_no_tolerations_is_still_admitted_on_the_gpu_flavor():
    """The flavor carries the toleration of its own taint: a run without any (no spec.resources.tolerations and
    an operator without node-pool defaults) is not left Queued forever."""
    from trainkit.spec.load import parse_spec
    from trainkit_operator import builders
    from trainkit_operator.config import OperatorConfig

    run = yaml.safe_load(SEED.read_text())
    run["metadata"].update(namespace="default", uid="0000-seed")
    del run["spec"]["resources"]["tolerations"]
    spec, _ = parse_spec(run["spec"])
    rayjob = builders.build_rayjob(run, spec, OperatorConfig())
    assert all(not ps["tolerations"] for ps in pod_sets(rayjob))
    d = docs()
    flavors = {f["metadata"]["name"]: f for f in d["ResourceFlavor"]}
    chosen = admit(d["ClusterQueue"][0], flavors, pod_sets(rayjob))
    assert chosen["gpu-workers"] == "h100-80gb"
    # ...and without the flavor's tolerations the same workers would fit nowhere (the example's old bug)
    for f in flavors.values():
        (f.get("spec") or {}).pop("tolerations", None)
    with pytest.raises(AssertionError, match="gpu-workers"):
        admit(d["ClusterQueue"][0], flavors, pod_sets(rayjob))
