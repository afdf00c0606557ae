"""`python -m trainkit.jobs.train --spec FILE` on bad input: a clear line naming the field, non-zero exit,
no Ray started, nothing written as if good, and no credential in the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from test_train_run import make_spec
from trainkit import storage


def entrypoint(spec_file, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "trainkit.jobs.train", "--spec", str(spec_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def assert_no_credentials(proc):
    for secret in (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in proc.stdout + proc.stderr


def test_missing_shards_and_unreachable_output_exit_non_zero(sources, bucket, tmp_path):
    # A bare spec as JSON (how the operator's ConfigMap carries it) with one source that was never prepared.
    bad_sources = dict(sources, edu=f"{bucket}/shards/never-prepared")
    doc = make_spec(bad_sources, f"{bucket}/runs/entry-missing").model_dump(mode="json", by_alias=True)
    (tmp_path / "spec.json").write_text(json.dumps(doc))
    proc = entrypoint(tmp_path / "spec.json")
    assert proc.returncode == 3, proc.stderr
    assert "spec.data.sources[2].uri (edu)" in proc.stderr and "never-prepared" in proc.stderr
    assert not storage.exists(f"{bucket}/runs/entry-missing")
    assert_no_credentials(proc)

    # A whole TrainingRun as YAML whose output bucket does not exist.
    run = {
        "apiVersion": "trainkit.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "unreachable"},
        "spec": make_spec(sources, "s3://tk-missing-bucket-0001/runs/x").model_dump(mode="json", by_alias=True),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    proc = entrypoint(tmp_path / "run.yaml")
    assert proc.returncode == 3, proc.stderr
    assert "spec.output.uri s3://tk-missing-bucket-0001/runs/x is not writable" in proc.stderr
    assert_no_credentials(proc)


def test_invalid_spec_exits_2_with_the_field(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "data: {totalTokens: 100, sources: []}\ntraining: {microBatchSize: 1, globalBatchSize: 1}\noutput: {uri: /tmp/x}\n"
    )
    proc = entrypoint(tmp_path / "bad.yaml")
    assert proc.returncode == 2
    assert "spec.data.sources" in proc.stderr
