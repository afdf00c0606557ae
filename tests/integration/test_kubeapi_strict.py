"""The test API server is as strict as a real kube-apiserver where a leniency would hide a bug of ours.

Each test names the upstream behaviour it follows (the Kubernetes source file or documentation).
"""

from __future__ import annotations

import copy
import json

import pytest

from kubeapi.fixtures import kube_api  # noqa: F401
from kubeapi.store import APIError

CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


def _crd_rt(api):
    return api.store.types[CRDS]


def _widget_crd(schema: dict, plural: str = "widgets") -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.example.dev"},
        "spec": {
            "group": "example.dev", "scope": "Namespaced",
            "names": {"plural": plural, "kind": plural.capitalize()[:-1], "singular": plural[:-1]},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": schema}}}}],
        },
    }  # fmt: skip


# ------------------------------------------------------------------------------------- CEL cost
# Upstream: staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go
# (StaticEstimatedCostLimit 1e7 per rule, StaticEstimatedCRDCostLimit 1e8 per CRD, the error wording) and
# cel_validation.go (cardinality: the product of maxItems/maxProperties above a rule).
def test_both_shipped_crds_are_admitted_under_the_cel_cost_limits(kube_api):
    from trainkit.spec.crd import all_crds
    from support.celcost import STATIC_ESTIMATED_COST_LIMIT, schema_rule_costs

    for crd in all_crds():
        kube_api.store.create(_crd_rt(kube_api), "v1", None, crd)
        costs = schema_rule_costs(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "s")
        assert costs and max(c.cost for c in costs) <= STATIC_ESTIMATED_COST_LIMIT
    assert kube_api.exists("customresourcedefinitions", "trainingsweeps.trainkit.dev", None)


def test_the_sweep_crd_with_unbounded_weights_is_refused_as_upstream_words_it(kube_api):
    """The bug the lenient server hid: `mixtures.explicit[].weights` had no maxProperties under a list of
    10,000, so `helm install` of the chart would have been refused by a real cluster."""
    from trainkit.spec.crd import training_sweep_crd

    crd = training_sweep_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    weights = spec["properties"]["mixtures"]["properties"]["explicit"]["items"]["properties"]["weights"]
    assert weights["maxProperties"] == 64  # the fix: as many weights as sources
    unbounded = copy.deepcopy(crd)
    del unbounded["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["mixtures"][
        "properties"]["explicit"]["items"]["properties"]["weights"]["maxProperties"]  # fmt: skip
    with pytest.raises(APIError) as e:
        kube_api.store.create(_crd_rt(kube_api), "v1", None, unbounded)
    assert e.value.code == 422
    rule_path = ("spec.validation.openAPIV3Schema.properties[spec].properties[mixtures].properties[explicit].items"
                 ".properties[weights].x-kubernetes-validations[0].rule")  # fmt: skip
    causes = {(c["field"], c["message"]) for c in e.value.details["causes"]}
    assert (rule_path, "Forbidden: estimated rule cost exceeds budget by factor of more than 100x (try simplifying the "
            "rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)") in causes
    assert any(f == "spec.validation.openAPIV3Schema" and "estimated rule cost total for entire OpenAPIv3 schema" in m
               for f, m in causes)  # fmt: skip
    assert e.value.message.startswith('CustomResourceDefinition.apiextensions.k8s.io "trainingsweeps.trainkit.dev" is invalid: [')
    assert not kube_api.exists("customresourcedefinitions", "trainingsweeps.trainkit.dev", None)


def test_cost_scales_with_bounds_like_upstream(kube_api):
    """A rule over an unbounded list of unbounded strings is refused; the same rule with maxItems/maxLength is
    admitted; a factor below 1.5 is printed with %f as getCostErrorMessage does."""
    rt = _crd_rt(kube_api)
    unbounded = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                 "x-kubernetes-validations": [{"rule": "self.all(t, t.contains('x'))"}]}}}  # fmt: skip
    with pytest.raises(APIError) as e:
        kube_api.store.create(rt, "v1", None, _widget_crd(unbounded))
    assert "estimated rule cost exceeds budget by factor of" in e.value.message
    bounded = copy.deepcopy(unbounded)
    bounded["properties"]["tags"].update(maxItems=100)
    bounded["properties"]["tags"]["items"].update(maxLength=63)
    kube_api.store.create(rt, "v1", None, _widget_crd(bounded))
    from support.celcost import cost_message

    assert cost_message("estimated rule cost", 12_000_000, 10_000_000).startswith(
        "estimated rule cost exceeds budget by factor of 1.200000x (")
    assert "factor of 2.5x" in cost_message("estimated rule cost", 25_000_000, 10_000_000)


def test_a_rule_under_a_map_costs_by_its_max_properties(kube_api):
    from support.celcost import MAX_REQUEST_SIZE_BYTES, max_elements

    # upstream schemas.go: (3 MiB - 2) / (min value size 1 + 6) map entries without maxProperties
    assert max_elements({"type": "object", "additionalProperties": {"type": "number"}}) == (MAX_REQUEST_SIZE_BYTES - 2) // 7
    assert max_elements({"type": "object", "additionalProperties": {"type": "number"}, "maxProperties": 5}) == 5
    assert max_elements({"type": "string", "maxLength": 10}) == 40  # maxLength is in runes, a rune is up to 4 bytes


# ------------------------------------------------------------------------------------- CEL nulls
# Upstream: a null of a `nullable: true` field is kept and is a value CEL sees (has() is true; arithmetic on
# it is an evaluation error -> 422); nulls of other fields are pruned before validation
# (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#defaulting-and-nullable).
def test_a_nullable_field_set_to_null_is_present_to_cel(kube_api):
    rt = _crd_rt(kube_api)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "nullable": True}, "m": {"type": "integer"}},
              "x-kubernetes-validations": [{"rule": "!has(self.n) || self.n % 2 == 0", "message": "n must be even"},
                                           {"rule": "!has(self.m) || self.m > 0", "message": "m must be > 0"}]}  # fmt: skip
    kube_api.store.create(rt, "v1", None, _widget_crd(schema))
    widgets = kube_api.store.resolve("widgets")
    ok = kube_api.store.create(widgets, "v1", "default", {"apiVersion": "example.dev/v1", "kind": "Widget",
                                                           "metadata": {"name": "a"}, "spec": {"n": 2, "m": None}})  # fmt: skip
    assert "m" not in ok["spec"]  # not nullable: the null is pruned, the rule sees no m
    with pytest.raises(APIError) as e:
        kube_api.store.create(widgets, "v1", "default", {"apiVersion": "example.dev/v1", "kind": "Widget",
                                                          "metadata": {"name": "b"}, "spec": {"n": None}})  # fmt: skip
    assert e.value.code == 422 and "n must be even" in e.value.message, e.value.message
    assert not kube_api.exists("widgets", "b")
    json.dumps(ok)  # stored objects stay JSON
