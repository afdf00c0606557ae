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

from test_operator_builders import built, head, seed_run, workers  # noqa: E402  (same folder)

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
    pool = OperatorConfig(default_tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},))
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
    env = {e["name"]: e.get("value") for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRAINKIT_RAY_TTL_SECONDS_AFTER_FINISHED"] == "1800"
    assert OperatorConfig.from_env(env).ray_ttl_seconds_after_finished == 1800


# ------------------------------------------------------------------ 12. one trainer image name everywhere
def test_12_the_operators_default_trainer_image_is_the_charts_and_the_jobs():
    chart = yaml.safe_load((REPO / "charts" / "trainkit" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "trainkit" / "values.yaml").read_text())
    chart_image = f"{values['trainer']['image']['repository']}:{values['trainer']['image']['tag'] or chart['appVersion']}"
    assert OperatorConfig().trainer_image == chart_image
    for job in sorted((REPO / "jobs").glob("prepare-*.yaml")):
        for doc in yaml.safe_load_all(job.read_text()):
            for c in _containers(doc):
                assert c["image"] == chart_image, (job.name, c["name"])


def _pod_specs(doc: dict | None) -> list[dict]:
    """Every pod spec inside a Job / CronJob / Pod document."""
    if not doc:
        return []
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return [spec]
    if doc.get("kind") == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return [spec["template"]["spec"]] if "template" in spec else []


def _containers(doc: dict | None) -> list[dict]:
    return [c for pod in _pod_specs(doc) for c in (pod.get("initContainers") or []) + pod["containers"]]
