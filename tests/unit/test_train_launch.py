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
