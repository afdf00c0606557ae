"""An output prefix has one owner: owner.json, created with a conditional PUT (`If-None-Match: *`, honoured by
moto's PutObject as by S3) or an exclusive link on a local filesystem, before anything else; checked on every
start. A second run on the same prefix is refused naming the prefix and the other owner, and changes no byte."""

from __future__ import annotations

import json

import pytest

from trainkit import artifacts, storage
from trainkit.spec import load_run
from trainkit.storage import StorageOptions
from trainkit.train.launch import PreflightError, check_output


def spec_at(uri: str, steps_tokens: int | None = None):
    spec = load_run("jobs/quickstart.yaml").spec
    spec = spec.model_copy(update={"output": spec.output.model_copy(update={"uri": uri})})
    if steps_tokens is not None:
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"seed": steps_tokens})})
    return spec


def snapshot(uri: str) -> dict[str, bytes]:
    return {f: storage.read_bytes(f) for f in storage.find(uri)}


def as_k8s(monkeypatch, namespace: str, name: str, uid: str) -> None:
    monkeypatch.setenv("TRAINKIT_RUN_UID", uid)
    monkeypatch.setenv("TRAINKIT_RUN_NAMESPACE", namespace)
    monkeypatch.setenv("TRAINKIT_RUN_NAME", name)


@pytest.fixture(params=["s3", "local"])
def prefix(request, tmp_path):
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/runs/shared"
    return str(tmp_path / "runs" / "shared")


def test_a_second_run_on_the_same_prefix_is_refused_and_changes_nothing(prefix, monkeypatch):
    options = StorageOptions()
    check_output(spec_at(prefix), options)
    owner = json.loads(storage.read_bytes(artifacts.run_file(prefix, artifacts.OWNER)))
    assert owner["owner"].startswith("local:") and len(owner["specHash"]) == 16
    storage.write_bytes(artifacts.run_file(prefix, artifacts.METRICS), b'{"step": 1, "loss": 3.0}\n')
    before = snapshot(prefix)

    other = spec_at(prefix, steps_tokens=99)  # another spec: another run
    with pytest.raises(PreflightError, match=rf"spec.output.uri {prefix} belongs to another run: {owner['owner']}"):
        check_output(other, options)
    assert snapshot(prefix) == before
    # the same spec again (re-running `trainkit run` to resume) is the same owner
    check_output(spec_at(prefix), options)


def test_delete_and_recreate_under_the_same_name_is_another_owner(prefix, monkeypatch):
    as_k8s(monkeypatch, "team-a", "mix", "uid-1")
    check_output(spec_at(prefix), StorageOptions())
    check_output(spec_at(prefix), StorageOptions())  # a retry of the same run (same uid) resumes
    before = snapshot(prefix)
    as_k8s(monkeypatch, "team-a", "mix", "uid-2")  # deleted and re-created: a new uid
    with pytest.raises(PreflightError, match=r"k8s:team-a/mix/uid-1.*this run is k8s:team-a/mix/uid-2"):
        check_output(spec_at(prefix), StorageOptions())
    as_k8s(monkeypatch, "team-b", "mix", "uid-3")  # a same-named sweep run in another namespace
    with pytest.raises(PreflightError, match=r"belongs to another run: k8s:team-a/mix/uid-1"):
        check_output(spec_at(prefix), StorageOptions())
    assert snapshot(prefix) == before


def test_conditional_create_is_exclusive(prefix):
    uri = storage.join(prefix, "x.json")
    assert storage.create_exclusive(uri, b"first", None) is True
    assert storage.create_exclusive(uri, b"second", None) is False
    assert storage.read_bytes(uri) == b"first"


def test_a_local_resume_with_other_resources_is_the_same_owner(prefix):
    spec = spec_at(prefix)
    check_output(spec, StorageOptions())
    fewer = spec.model_copy(update={"resources": spec.resources.model_copy(update={"workers": 1})})
    check_output(fewer, StorageOptions())
