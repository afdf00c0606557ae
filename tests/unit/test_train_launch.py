"""Spec files as the entrypoint reads them, and local paths made absolute for Ray workers."""

import json

import pytest
import yaml

from trainkit.jobs.train import load_spec_file
from trainkit.spec import SpecError, load_run
from trainkit.train.launch import resolve_local_paths


def test_run_or_bare_spec_as_yaml_or_json(tmp_path):
    run = yaml.safe_load(open("jobs/quickstart.yaml"))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "spec.json").write_text(json.dumps(run["spec"]))
    a, name = load_spec_file(tmp_path / "run.yaml")
    b, none = load_spec_file(tmp_path / "spec.json")
    assert (name, none) == ("quickstart", None) and a == b
    (tmp_path / "bad.json").write_text(
        json.dumps({**run["spec"], "training": {"microBatchSize": 0, "globalBatchSize": 8}})
    )
    with pytest.raises(SpecError, match=r"spec\.training\.microBatchSize"):
        load_spec_file(tmp_path / "bad.json")


def test_relative_local_paths_become_absolute_and_uris_stay():
    spec = load_run("jobs/quickstart.yaml").spec
    out = resolve_local_paths(spec, "/work/here")
    assert out.output.uri == "/work/here/runs/quickstart"
    assert [s.uri for s in out.data.sources] == [f"/work/here/demo-data/shards/{n}" for n in ("manuals", "web", "edu")]
    assert out.tokenizer == "gpt2"
    seed = load_run("jobs/gpt2-70m-50-30-20.yaml").spec
    assert resolve_local_paths(seed, "/x") == seed


def test_json_exponents_are_numbers_not_yaml_strings(tmp_path):
    """json.dumps writes eps as 1e-08, which YAML 1.1 would read as a string: spec.json is read as JSON."""
    run = yaml.safe_load(open("jobs/gpt2-70m-50-30-20.yaml"))
    (tmp_path / "spec.json").write_text(json.dumps(run))
    assert "1e-08" in (tmp_path / "spec.json").read_text()
    spec, name = load_spec_file(tmp_path / "spec.json")
    assert spec.training.optimizer.eps == 1e-8 and name == "gpt2-70m-50-30-20"


def test_a_source_or_target_naming_a_training_data_is_left_for_preflight_to_name(tmp_path):
    from trainkit.spec.plan import derive_plan
    from trainkit.storage import StorageOptions
    from trainkit.train.launch import PreflightError, check_shards

    doc = yaml.safe_load(open("jobs/quickstart.yaml"))
    doc["spec"]["data"]["sources"][0] = {"name": "manuals", "dataset": "manuals-data", "weight": 0.5}
    doc["spec"]["data"]["validationTargets"] = [
        {"name": "law", "dataset": "law-data"},
        {"name": "code", "uri": "shards/code"},
    ]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = resolve_local_paths(load_run(str(path)).spec, str(tmp_path))  # no KeyError on the uri-less ones
    assert [t.uri for t in out.data.validation_targets] == [None, f"{tmp_path}/shards/code"]
    with pytest.raises(PreflightError) as e:
        check_shards(out, derive_plan(out), StorageOptions())
    assert "spec.data.sources[0].dataset (manuals): TrainingData 'manuals-data'" in str(e.value)
    assert "spec.data.validationTargets[0].dataset (law): TrainingData 'law-data'" in str(e.value)
    assert f"spec.data.validationTargets[1].uri (code): no token shards at {tmp_path}/shards/code" in str(e.value)
