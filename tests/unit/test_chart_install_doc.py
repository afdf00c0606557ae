"""docs/install.md stays true: its example values install, the files it names exist, and the versions it
states agree with the chart, the images and pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from support.helm import CHART, one, render

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "install.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)


def test_the_example_values_file_renders_and_reaches_the_operator():
    (block,) = [b for b in yaml_blocks() if b.startswith("# my-values.yaml")]
    values = yaml.safe_load(block)
    docs = render(values=values, release="trainkit")
    dep = one(docs, "Deployment")
    assert dep["metadata"]["name"] == "trainkit"  # the doc's `deployment/trainkit` and service account name
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.example.com/ml/trainkit-operator:0.1.0"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TRAINKIT_TRAINER_IMAGE"] == "registry.example.com/ml/trainkit-trainer:0.1.0"
    assert one(docs, "ServiceAccount")["metadata"]["name"] == "trainkit"


def test_every_repository_path_the_doc_names_exists():
    paths = set(re.findall(r"(?<![\w/.-])((?:jobs|charts|images|docs)/[\w./-]+\w)", DOC))
    assert {"jobs/kueue-setup.yaml", "charts/trainkit/crds", "images/operator/Dockerfile"} <= paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, missing


def test_stated_versions_agree_with_the_bundle():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    kuberay_min = chart["annotations"]["trainkit.dev/requires-kuberay"].removeprefix(">=")
    kueue_min = chart["annotations"]["trainkit.dev/supports-kueue"].removeprefix(">=")
    assert f"| KubeRay operator | v{kuberay_min.rsplit('.', 1)[0]} or later" in DOC
    assert f"| Kueue | v{kueue_min.rsplit('.', 1)[0]} or later" in DOC
    kube_min = re.search(r">=(\d+\.\d+)", chart["kubeVersion"]).group(1)
    assert f"| Kubernetes | {kube_min} or later" in DOC
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [p for p in pins if p.startswith("ray[")]
    ray_version = ray.split("==")[1]
    assert f"| Ray (trainer image) | {ray_version} |" in DOC
    assert f"rayproject/ray:{ray_version}-py311-cu128" in DOC
    assert f"FROM rayproject/ray:{ray_version}-py311-cu128" in (REPO / "images" / "trainer" / "Dockerfile").read_text()
