"""The prepare RayJob manifests: well-formed KubeRay RayJobs whose commands our CLI accepts."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from trainkit.cli import build_parser

MANIFESTS = ["jobs/prepare-demo.yaml", "jobs/prepare-seed-datasets.yaml"]


def trainkit_commands(entrypoint: str) -> list[list[str]]:
    loop = re.search(r"for name in ([^;]+);", entrypoint)
    names = loop.group(1).split() if loop else [""]
    commands = []
    for part in entrypoint.split(";"):
        part = part.strip().removeprefix("do ").strip()
        if part.startswith("trainkit "):
            for name in names if "$name" in part else [""]:
                commands.append(shlex.split(part.replace("$name", name))[1:])
    return commands


@pytest.mark.parametrize("path", MANIFESTS)
def test_manifest_is_a_rayjob_our_cli_accepts(path):
    job = yaml.safe_load(open(path))
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["shutdownAfterJobFinishes"] is True  # Kueue requires it; clusters never linger
    commands = trainkit_commands(job["spec"]["entrypoint"])
    assert any(c[0] == "prepare" for c in commands)
    for argv in commands:
        args = build_parser().parse_args(argv)  # exits on an unknown option or a missing argument
        assert callable(args.func)
    groups = [job["spec"]["rayClusterSpec"]["headGroupSpec"]] + job["spec"]["rayClusterSpec"].get(
        "workerGroupSpecs", []
    )
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            # Credentials only through the Secret, never as literal env values.
            assert not [e for e in container.get("env", []) if "KEY" in e["name"] or "SECRET" in e["name"]]
            assert container["envFrom"] == [{"secretRef": {"name": "trainkit-s3"}}]


def test_seed_prepare_writes_the_sources_the_seed_run_reads():
    job = yaml.safe_load(open("jobs/prepare-seed-datasets.yaml"))
    outputs = {argv[2].rstrip("/") for argv in trainkit_commands(job["spec"]["entrypoint"]) if argv[0] == "prepare"}
    run = yaml.safe_load(open("jobs/gpt2-70m-50-30-20.yaml"))
    assert outputs == {s["uri"].rstrip("/") for s in run["spec"]["data"]["sources"]}


def test_seed_run_naming_datasets_is_the_seed_run_on_the_seed_datasets():
    """jobs/seed-datasets.yaml holds the seed's three hub datasets as TrainingData; the datasets variant of the seed
    run names them, with the seed run's weights and everything else unchanged."""
    from trainkit.spec.load import load_resources

    datas = {d.metadata.name: d.spec for d in load_resources("jobs/seed-datasets.yaml")}
    assert {n: s.inputs for n, s in datas.items()} == {
        "finepdfs-1b": ["hf://datasets/codelion/finepdfs-1B"],
        "dclm-baseline-1b": ["hf://datasets/codelion/dclm-baseline-1B"],
        "fineweb-edu-1b": ["hf://datasets/codelion/fineweb-edu-1B"],
    }
    assert all(
        s.text_column == "text" and s.tokenizer == "gpt2" and s.output.uri.startswith("s3://") for s in datas.values()
    )
    (named,) = load_resources("jobs/gpt2-70m-50-30-20-datasets.yaml")
    (seed,) = load_resources("jobs/gpt2-70m-50-30-20.yaml")
    assert [(s.name, s.dataset, s.weight) for s in named.spec.data.sources] == [
        ("finepdfs", "finepdfs-1b", 0.5),
        ("dclm-baseline", "dclm-baseline-1b", 0.3),
        ("fineweb-edu", "fineweb-edu-1b", 0.2),
    ]
    assert {s.dataset for s in named.spec.data.sources} == set(datas)
    unchanged = {"data": {"sources"}, "output": {"uri"}}
    assert named.spec.model_dump(exclude=unchanged) == seed.spec.model_dump(exclude=unchanged)
