"""CRDs on the test API server: registration and discovery, then the TrainingRun schema enforced as a
kube-apiserver enforces it (defaulting, pruning, strict field validation, OpenAPI and CEL -> 422)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[2]
ARGS = ("trainkit.dev", "v1alpha1", "default", "trainingruns")


@pytest.fixture
def clients(kube_api):
    import kubernetes
    from trainkit.spec.crd import training_run_crd

    client = kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(training_run_crd())
    yield kubernetes, client, kubernetes.client.CustomObjectsApi(client)
    client.close()


def _run(name="gpt2-70m-50-30-20"):
    run = yaml.safe_load((REPO / "jobs" / "gpt2-70m-50-30-20.yaml").read_text())
    run["metadata"]["name"] = name
    return run


def _invalid(exc):
    import json

    assert exc.status == 422, (exc.status, exc.body)
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["reason"] == "Invalid" and body["code"] == 422
    return body


def test_crd_registers_resource_in_discovery(clients, kube_api):
    kubernetes, client, _ = clients
    crd = kubernetes.client.ApiextensionsV1Api(client).read_custom_resource_definition("trainingruns.trainkit.dev")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    assert crd.status.accepted_names.short_names == ["tr"] and crd.status.stored_versions == ["v1alpha1"]
    groups = kubernetes.client.ApisApi(client).get_api_versions()
    tk = next(g for g in groups.groups if g.name == "trainkit.dev")
    assert tk.preferred_version.version == "v1alpha1"
    resources = kubernetes.client.CustomObjectsApi(client).get_api_resources("trainkit.dev", "v1alpha1").resources
    by_name = {r.name: r for r in resources}
    assert by_name["trainingruns"].kind == "TrainingRun" and by_name["trainingruns"].namespaced
    assert by_name["trainingruns"].short_names == ["tr"] and "watch" in by_name["trainingruns"].verbs
    assert set(by_name["trainingruns/status"].verbs) == {"get", "patch", "update"}


def test_create_applies_schema_defaults(clients):
    _, _, api = clients
    run = _run()
    del run["spec"]["checkpoint"]
    del run["spec"]["training"]["optimizer"]
    created = api.create_namespaced_custom_object(*ARGS, run)
    assert created["spec"]["checkpoint"] == {"everySteps": 500, "keep": 3}
    assert created["spec"]["training"]["optimizer"] == {
        "name": "adamw",
        "betas": [0.9, 0.95],
        "eps": 1e-08,
        "weightDecay": 0.1,
    }
    assert created["spec"]["data"]["shardFormat"] == "trainkit-tokens-v1"
    assert created["spec"]["resources"]["tolerations"][0]["operator"] == "Exists"  # given values win
    assert created["metadata"]["generation"] == 1 and "status" not in created
    assert api.get_namespaced_custom_object(*ARGS, run["metadata"]["name"])["spec"] == created["spec"]


def test_unknown_fields_are_pruned_with_a_warning(clients):
    _, _, api = clients
    run = _run()
    run["spec"]["data"]["bogus"] = 1
    run["spec"]["sources"] = "misplaced"
    run["extraTopLevel"] = True
    created, code, headers = api.create_namespaced_custom_object_with_http_info(*ARGS, run)
    assert code == 201
    assert (
        "bogus" not in created["spec"]["data"] and "sources" not in created["spec"] and "extraTopLevel" not in created
    )
    warning = headers.get("Warning", "")
    assert 'unknown field \\"spec.data.bogus\\"' in warning and 'unknown field \\"extraTopLevel\\"' in warning


def test_unknown_field_with_strict_validation_is_rejected(clients, kube_api):
    from kubernetes.client.exceptions import ApiException

    _, _, api = clients
    run = _run()
    run["spec"]["training"]["learningRate"]["peek"] = 0.1
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, run, field_validation="Strict")
    # a real kube-apiserver answers strict decoding errors with 400 BadRequest (not 422)
    assert e.value.status == 400 and '"reason":"BadRequest"' in e.value.body
    assert 'strict decoding error: unknown field \\"spec.training.learningRate.peek\\"' in e.value.body
    assert not kube_api.exists("trainingruns.trainkit.dev", run["metadata"]["name"])
    created = api.create_namespaced_custom_object(*ARGS, run, field_validation="Ignore")
    assert "peek" not in created["spec"]["training"]["learningRate"]


def test_invalid_weight_is_422_with_the_field(clients, kube_api):
    from kubernetes.client.exceptions import ApiException

    _, _, api = clients
    run = _run()
    run["spec"]["data"]["sources"][1]["weight"] = 0
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, run)
    body = _invalid(e.value)
    assert body["details"]["kind"] == "TrainingRun" and body["details"]["group"] == "trainkit.dev"
    assert any(c["field"] == "spec.data.sources[1].weight" for c in body["details"]["causes"])
    assert not kube_api.exists("trainingruns.trainkit.dev", run["metadata"]["name"])
    run["spec"]["data"]["sources"][1]["weight"] = "heavy"
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, run)
    assert any(c["field"] == "spec.data.sources[1].weight" for c in _invalid(e.value)["details"]["causes"])


def test_name_rules_from_cel(clients):
    from kubernetes.client.exceptions import ApiException

    _, _, api = clients
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, _run("a" * 41))
    assert "at most 40 characters" in str(_invalid(e.value)["message"])
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, _run("run.with.dots"))  # a DNS subdomain, not a DNS-1035 label
    assert "DNS-1035" in _invalid(e.value)["message"]
    assert api.create_namespaced_custom_object(*ARGS, _run("a" * 40))["metadata"]["name"] == "a" * 40


def test_cross_field_cel_and_list_map_keys(clients):
    from kubernetes.client.exceptions import ApiException

    _, _, api = clients
    run = _run()
    run["spec"]["training"]["globalBatchSize"] = 100  # not a multiple of microBatchSize 24
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, run)
    assert any(c["field"] == "spec.training.globalBatchSize" for c in _invalid(e.value)["details"]["causes"])
    run = _run()
    run["spec"]["data"]["sources"][2]["name"] = "finepdfs"  # duplicate list-map key
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, run)
    assert "Duplicate value" in _invalid(e.value)["message"]


def test_updates_and_status_writes_are_validated(clients):
    from kubernetes.client.exceptions import ApiException

    _, _, api = clients
    name = _run()["metadata"]["name"]
    api.create_namespaced_custom_object(*ARGS, _run())
    with pytest.raises(ApiException) as e:
        api.patch_namespaced_custom_object(*ARGS, name, {"spec": {"training": {"microBatchSize": -1}}})
    _invalid(e.value)
    with pytest.raises(ApiException) as e:
        api.patch_namespaced_custom_object_status(*ARGS, name, {"status": {"phase": "Exploded"}})
    assert any(c["field"] == "status.phase" for c in _invalid(e.value)["details"]["causes"])
    st = api.patch_namespaced_custom_object_status(*ARGS, name, {"status": {"progress": {"step": 3}}})
    assert st["status"]["phase"] == "Pending", "status defaults apply once status exists"
    assert st["status"]["progress"]["totalSteps"] == 0
    # a valid spec change bumps generation; null drops an optional field and its default comes back
    upd = api.patch_namespaced_custom_object(*ARGS, name, {"spec": {"checkpoint": {"keep": None}}})
    assert upd["spec"]["checkpoint"]["keep"] == 3 and upd["metadata"]["generation"] == 1  # same after defaulting
    upd = api.patch_namespaced_custom_object(*ARGS, name, {"spec": {"checkpoint": {"keep": 5}}})
    assert upd["metadata"]["generation"] == 2


def test_deleting_the_crd_removes_its_resource(clients, kube_api):
    kubernetes, client, api = clients
    from kubernetes.client.exceptions import ApiException

    api.create_namespaced_custom_object(*ARGS, _run())
    kubernetes.client.ApiextensionsV1Api(client).delete_custom_resource_definition("trainingruns.trainkit.dev")
    with pytest.raises(ApiException) as e:
        api.list_namespaced_custom_object(*ARGS)
    assert e.value.status == 404
    groups = [g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups]
    assert "trainkit.dev" not in groups and "ray.io" in groups


def test_invalid_crd_is_rejected(clients):
    kubernetes, client, _ = clients
    from kubernetes.client.exceptions import ApiException
    from trainkit.spec.crd import training_run_crd

    crd = copy.deepcopy(training_run_crd())
    crd["metadata"]["name"] = "wrong.trainkit.dev"
    with pytest.raises(ApiException) as e:
        kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(crd)
    assert e.value.status == 422


def test_errors_are_worded_as_the_api_server_words_them(clients):
    from kubernetes.client.exceptions import ApiException

    _, _, api = clients
    run = _run("worded")
    run["spec"]["data"]["sources"][0]["weight"] = 0
    del run["spec"]["data"]["sources"][2]["weight"]
    run["spec"]["training"]["precision"] = "fp8"
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, run)
    body = _invalid(e.value)
    assert body["message"].startswith('TrainingRun.trainkit.dev "worded" is invalid: [')
    causes = {c["field"]: c["message"] for c in body["details"]["causes"]}
    assert causes["spec.data.sources[0].weight"] == (
        "Invalid value: 0: spec.data.sources[0].weight in body should be greater than 0"
    )
    assert causes["spec.data.sources[2].weight"] == "Required value"  # at the missing field, not its parent
    assert causes["spec.training.precision"].startswith('Unsupported value: "fp8": supported values: "bf16"')
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(*ARGS, _run("b" * 41))
    assert (
        '"worded"' not in e.value.body
        and 'is invalid: <nil>: Invalid value: \\"object\\": metadata.name must be at most 40' in e.value.body
    )
