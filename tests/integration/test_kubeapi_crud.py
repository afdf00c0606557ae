"""The test API server behaves like a kube-apiserver for the official client: CRUD, conflicts, patches,
the status subresource, generation, selectors, deletion, finalizers and garbage collection."""

from __future__ import annotations

import pytest


# Generic custom-resource semantics on free-form RayJobs: the server's schema-less RayJob CRD (KubeRay's
# schema, the default, is tested in test_kubeapi_strict.py).
pytestmark = pytest.mark.kubeapi(rayjob="schemaless")


@pytest.fixture
def k8s(kube_api):
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    yield kubernetes, client
    client.close()


def _core(k8s):
    kubernetes, client = k8s
    return kubernetes.client.CoreV1Api(client)


def _custom(k8s):
    kubernetes, client = k8s
    return kubernetes.client.CustomObjectsApi(client)


def _rayjob(name, **spec):
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name},
        "spec": {"entrypoint": "python x.py", **spec},
    }


def test_create_returns_201_object_with_server_fields(k8s, kube_api):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta

    core = _core(k8s)
    created, code, _ = core.create_namespaced_config_map_with_http_info(
        "default", V1ConfigMap(metadata=V1ObjectMeta(name="a"), data={"k": "v"})
    )
    assert code == 201
    assert created is not None and created.metadata.uid and created.metadata.resource_version
    assert created.metadata.namespace == "default" and created.metadata.creation_timestamp is not None
    other = core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="b")))
    assert int(other.metadata.resource_version) > int(created.metadata.resource_version)
    assert other.metadata.uid != created.metadata.uid
    assert core.read_namespaced_config_map("a", "default").data == {"k": "v"}


def test_create_conflicts_and_missing(k8s):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a")))
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a")))
    assert e.value.status == 409 and '"reason":"AlreadyExists"' in e.value.body
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("nope", "default")
    assert e.value.status == 404 and '"reason":"NotFound"' in e.value.body
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("no-such-ns", V1ConfigMap(metadata=V1ObjectMeta(name="a")))
    assert e.value.status == 404 and 'namespaces \\"no-such-ns\\" not found' in e.value.body
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="Bad_Name")))
    assert e.value.status == 422


def test_generate_name(k8s):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta

    core = _core(k8s)
    a = core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(generate_name="run-")))
    b = core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(generate_name="run-")))
    assert a.metadata.name.startswith("run-") and len(a.metadata.name) == len("run-") + 5
    assert a.metadata.name != b.metadata.name


def test_stale_update_is_409_and_fresh_update_wins(k8s):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    cm = core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a"), data={"n": "0"}))
    first = core.read_namespaced_config_map("a", "default")
    first.data = {"n": "1"}
    updated = core.replace_namespaced_config_map("a", "default", first)
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)
    cm.data = {"n": "stale"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("a", "default", cm)
    assert e.value.status == 409 and "the object has been modified" in e.value.body
    assert core.read_namespaced_config_map("a", "default").data == {"n": "1"}


def test_custom_resource_update_requires_resource_version(k8s):
    from kubernetes.client.exceptions import ApiException

    api = _custom(k8s)
    obj = api.create_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", _rayjob("j"))
    obj["metadata"].pop("resourceVersion")
    with pytest.raises(ApiException) as e:
        api.replace_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", "j", obj)
    assert e.value.status == 422 and "must be specified for an update" in e.value.body


def test_merge_and_json_patch(k8s):
    from kubernetes.client.exceptions import ApiException

    kubernetes, client = k8s
    api = _custom(k8s)
    api.create_namespaced_custom_object(
        "ray.io", "v1", "default", "rayjobs", _rayjob("j", suspend=True, x={"a": 1, "b": 2})
    )
    merged = api.patch_namespaced_custom_object(
        "ray.io", "v1", "default", "rayjobs", "j", {"spec": {"x": {"a": None, "c": 3}}}
    )
    assert merged["spec"]["x"] == {"b": 2, "c": 3} and merged["spec"]["suspend"] is True
    # JSON patch through the raw API client (the generated API picks merge patch for dicts)
    path = "/apis/ray.io/v1/namespaces/default/rayjobs/j"
    ops = [{"op": "test", "path": "/spec/suspend", "value": True}, {"op": "replace", "path": "/spec/suspend", "value": False},
           {"op": "add", "path": "/spec/list", "value": [1]}, {"op": "add", "path": "/spec/list/-", "value": 2},
           {"op": "remove", "path": "/spec/x/b"}]  # fmt: skip
    client.call_api(path, "PATCH", header_params={"Content-Type": "application/json-patch+json"}, body=ops,
                    auth_settings=["BearerToken"], _preload_content=False)  # fmt: skip
    got = api.get_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", "j")
    assert got["spec"]["suspend"] is False and got["spec"]["list"] == [1, 2] and got["spec"]["x"] == {"c": 3}
    with pytest.raises(ApiException) as e:  # a failing `test` op rejects the whole patch
        client.call_api(path, "PATCH", header_params={"Content-Type": "application/json-patch+json"},
                        body=[{"op": "test", "path": "/spec/suspend", "value": True},
                              {"op": "replace", "path": "/spec/entrypoint", "value": "changed"}],
                        auth_settings=["BearerToken"], _preload_content=False)  # fmt: skip
    assert e.value.status == 422
    assert (
        api.get_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", "j")["spec"]["entrypoint"]
        == "python x.py"
    )
    with pytest.raises(ApiException) as e:  # strategic merge patch is not for custom resources
        client.call_api(path, "PATCH", header_params={"Content-Type": "application/strategic-merge-patch+json"},
                        body={"spec": {"suspend": True}}, auth_settings=["BearerToken"], _preload_content=False)  # fmt: skip
    assert e.value.status == 415


def test_patch_with_stale_resource_version_is_409(k8s):
    from kubernetes.client.exceptions import ApiException

    api = _custom(k8s)
    obj = api.create_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", _rayjob("j"))
    api.patch_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", "j", {"spec": {"suspend": True}})
    with pytest.raises(ApiException) as e:
        api.patch_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", "j",
                                           {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                            "spec": {"suspend": False}})  # fmt: skip
    assert e.value.status == 409


def test_status_subresource_isolation_and_generation(k8s):
    api = _custom(k8s)
    args = ("ray.io", "v1", "default", "rayjobs")
    created = api.create_namespaced_custom_object(*args, {**_rayjob("j"), "status": {"jobStatus": "SUCCEEDED"}})
    assert "status" not in created, "create ignores status when the status subresource is enabled"
    assert created["metadata"]["generation"] == 1
    # a status write ignores spec changes and does not bump generation
    st = api.patch_namespaced_custom_object_status(
        *args, "j", {"spec": {"entrypoint": "evil"}, "status": {"jobStatus": "RUNNING"}}
    )
    assert st["status"] == {"jobStatus": "RUNNING"} and st["spec"]["entrypoint"] == "python x.py"
    assert st["metadata"]["generation"] == 1
    # a main-resource write ignores status changes; a spec change bumps generation
    main = api.patch_namespaced_custom_object(
        *args, "j", {"spec": {"entrypoint": "python y.py"}, "status": {"jobStatus": "FAILED"}}
    )
    assert main["status"] == {"jobStatus": "RUNNING"} and main["metadata"]["generation"] == 2
    # metadata-only changes do not bump generation
    meta = api.patch_namespaced_custom_object(*args, "j", {"metadata": {"labels": {"a": "b"}}})
    assert meta["metadata"]["generation"] == 2 and int(meta["metadata"]["resourceVersion"]) > int(
        main["metadata"]["resourceVersion"]
    )
    # PUT to /status replaces the status only
    obj = api.get_namespaced_custom_object(*args, "j")
    obj["status"] = {"jobStatus": "SUCCEEDED"}
    obj["spec"]["entrypoint"] = "ignored"
    put = api.replace_namespaced_custom_object_status(*args, "j", obj)
    assert put["status"] == {"jobStatus": "SUCCEEDED"} and put["spec"]["entrypoint"] == "python y.py"
    # a no-op write changes nothing, not even the resourceVersion
    same = api.patch_namespaced_custom_object(*args, "j", {"metadata": {"labels": {"a": "b"}}})
    assert same["metadata"]["resourceVersion"] == put["metadata"]["resourceVersion"]


def test_label_and_field_selectors(k8s):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta

    core = _core(k8s)
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {"tier": "db"}), ("d", None)]:
        core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name=name, labels=labels)))

    def names(**kw):
        return sorted(i.metadata.name for i in core.list_namespaced_config_map("default", **kw).items)

    assert names() == ["a", "b", "c", "d"]
    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app==y") == ["b"]
    assert names(label_selector="app!=x") == ["b", "c", "d"]  # != matches objects without the label
    assert names(label_selector="app in (x, y)") == ["a", "b"]
    assert names(label_selector="app notin (x)") == ["b", "c", "d"]
    assert names(label_selector="tier") == ["a", "c"]
    assert names(label_selector="!tier") == ["b", "d"]
    assert names(label_selector="app,tier=web") == ["a"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(field_selector="metadata.name!=c") == ["a", "b", "d"]
    listed = core.list_namespaced_config_map("default", limit=3)
    assert len(listed.items) == 3 and listed.metadata._continue
    rest = core.list_namespaced_config_map("default", limit=3, _continue=listed.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["d"]


def test_finalizers_hold_deletion(k8s, kube_api):
    api = _custom(k8s)
    args = ("ray.io", "v1", "default", "rayjobs")
    api.create_namespaced_custom_object(*args, {**_rayjob("j"), "metadata": {"name": "j", "finalizers": ["test/hold"]}})
    deleted = api.delete_namespaced_custom_object(*args, "j")
    assert deleted["metadata"]["deletionTimestamp"]
    held = api.get_namespaced_custom_object(*args, "j")
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["generation"] == 2
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as e:  # no new finalizers while deleting
        api.patch_namespaced_custom_object(*args, "j", {"metadata": {"finalizers": ["test/hold", "test/more"]}})
    assert e.value.status == 422
    api.patch_namespaced_custom_object(*args, "j", {"metadata": {"finalizers": None}})
    assert not kube_api.exists("rayjobs", "j")


def test_garbage_collection_follows_owner_references(k8s, kube_api):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta, V1OwnerReference

    core = _core(k8s)
    api = _custom(k8s)
    args = ("ray.io", "v1", "default", "rayjobs")
    owner = api.create_namespaced_custom_object(*args, _rayjob("owner"))
    other = api.create_namespaced_custom_object(*args, _rayjob("other"))

    def ref(o):
        return V1OwnerReference(
            api_version="ray.io/v1", kind="RayJob", name=o["metadata"]["name"], uid=o["metadata"]["uid"]
        )

    child = core.create_namespaced_config_map(
        "default", V1ConfigMap(metadata=V1ObjectMeta(name="child", owner_references=[ref(owner)]))
    )
    # a grandchild owned by the child: deletion cascades
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(
        name="grandchild", owner_references=[V1OwnerReference(api_version="v1", kind="ConfigMap", name="child", uid=child.metadata.uid)])))  # fmt: skip
    # two owners: kept while one lives
    core.create_namespaced_config_map(
        "default", V1ConfigMap(metadata=V1ObjectMeta(name="shared", owner_references=[ref(owner), ref(other)]))
    )
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="unrelated")))
    api.delete_namespaced_custom_object(*args, "owner")
    # garbage collection is a controller's work after the request, not part of it
    assert len(kube_api.list("configmaps", "default")) == 4
    kube_api.collect_garbage()
    names = sorted(c["metadata"]["name"] for c in kube_api.list("configmaps", "default"))
    assert names == ["shared", "unrelated"]
    api.delete_namespaced_custom_object(*args, "other")
    kube_api.collect_garbage()
    assert sorted(c["metadata"]["name"] for c in kube_api.list("configmaps", "default")) == ["unrelated"]


def test_orphan_propagation_keeps_dependents(k8s, kube_api):
    from kubernetes.client import V1ConfigMap, V1DeleteOptions, V1ObjectMeta, V1OwnerReference

    core = _core(k8s)
    owner = core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(
        name="dep", owner_references=[V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)])))  # fmt: skip
    core.delete_namespaced_config_map("owner", "default", body=V1DeleteOptions(propagation_policy="Orphan"))
    # the API server puts the GC's `orphan` finalizer on the owner; the GC strips the references, then it
    assert kube_api.get("configmaps", "owner")["metadata"]["finalizers"] == ["orphan"]
    kube_api.collect_garbage()
    dep = kube_api.get("configmaps", "dep")
    assert not dep["metadata"].get("ownerReferences")
    assert not kube_api.exists("configmaps", "owner")


def test_namespace_deletion_removes_content(k8s, kube_api):
    from kubernetes.client import V1ConfigMap, V1Namespace, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name="team")))
    core.create_namespaced_config_map("team", V1ConfigMap(metadata=V1ObjectMeta(name="a")))
    core.delete_namespace("team")
    assert not kube_api.exists("configmaps", "a", "team") and not kube_api.exists("namespaces", "team", None)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("team", V1ConfigMap(metadata=V1ObjectMeta(name="a")))
    assert e.value.status == 404


def test_request_log_uses_rbac_verbs(k8s, kube_api):
    api = _custom(k8s)
    args = ("ray.io", "v1", "default", "rayjobs")
    api.create_namespaced_custom_object(*args, _rayjob("j"))
    api.get_namespaced_custom_object(*args, "j")
    api.list_namespaced_custom_object(*args)
    api.patch_namespaced_custom_object_status(*args, "j", {"status": {"jobStatus": "RUNNING"}})
    api.delete_namespaced_custom_object(*args, "j")
    got = [(r.verb, r.group, r.resource, r.subresource, r.namespace) for r in kube_api.requests]
    assert got == [
        ("create", "ray.io", "rayjobs", None, "default"),
        ("get", "ray.io", "rayjobs", None, "default"),
        ("list", "ray.io", "rayjobs", None, "default"),
        ("patch", "ray.io", "rayjobs", "status", "default"),
        ("delete", "ray.io", "rayjobs", None, "default"),
    ]
    assert kube_api.requests[3].rbac == ("ray.io", "rayjobs/status", "patch")


def test_fault_injection(k8s, kube_api):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    kube_api.inject("POST", r"/configmaps", 500, times=1)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a")))
    assert e.value.status == 500 and not kube_api.exists("configmaps", "a")
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a")))  # only once
    kube_api.inject("PATCH", r"/configmaps/a$", 409, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            core.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}})
        assert e.value.status == 409
    assert core.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}}).data == {"x": "1"}


def test_owner_reference_validation_and_uid_precondition(k8s):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta, V1OwnerReference
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    api = _custom(k8s)
    with pytest.raises(ApiException) as e:  # the client model forbids a missing uid; send a raw dict
        api.create_namespaced_custom_object("ray.io", "v1", "default", "rayjobs", {**_rayjob("j"), "metadata": {
            "name": "j", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}]}})  # fmt: skip
    assert e.value.status == 422 and "ownerReferences[0].uid" in e.value.body
    two = [V1OwnerReference(api_version="v1", kind="ConfigMap", name=n, uid=n, controller=True) for n in "ab"]
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="c", owner_references=two)))
    assert e.value.status == 422 and "only one reference can have Controller" in e.value.body
    cm = core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="c")))
    cm.metadata.uid = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("c", "default", cm)
    assert e.value.status == 409 and "UID in precondition" in e.value.body


def test_server_side_apply_creates_then_merges(kube_api):
    import http.client
    import json

    def apply(body, manager="tester"):
        conn = http.client.HTTPConnection("127.0.0.1", kube_api.port, timeout=10)
        query = f"?fieldManager={manager}" if manager else ""
        conn.request("PATCH", f"/apis/ray.io/v1/namespaces/default/rayjobs/j{query}", body=json.dumps(body),
                     headers={"Content-Type": "application/apply-patch+yaml"})  # fmt: skip
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read())
        conn.close()
        return out

    code, created = apply(_rayjob("j", suspend=True))
    assert code == 201 and created["metadata"]["uid"] and created["spec"]["suspend"] is True
    code, merged = apply(
        {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "j"}, "spec": {"suspend": False}}
    )
    assert code == 200 and merged["spec"] == {"entrypoint": "python x.py", "suspend": False}
    assert merged["metadata"]["generation"] == 2
    code, body = apply(_rayjob("j"), manager=None)
    assert code == 422 and "fieldManager" in body["message"]


def test_api_client_helper_and_plain_context_manager(tmp_path):
    import kubernetes

    from kubeapi import KubeAPIServer

    with KubeAPIServer(rayjob=False) as api:
        client = api.api_client()
        core = kubernetes.client.CoreV1Api(client)
        names = [n.metadata.name for n in core.list_namespace().items]
        assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
        assert "ray.io" not in [g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups]
        client.close()
        url = api.url
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.URLError):  # stopped: nothing listens any more
        urllib.request.urlopen(url + "/healthz", timeout=2)


def test_create_with_resource_version_is_rejected(k8s):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a", resource_version="5")))
    assert e.value.status == 500 and "resourceVersion should not be set on objects to be created" in e.value.body


def test_status_patch_with_stale_resource_version_is_409(k8s):
    from kubernetes.client.exceptions import ApiException

    api = _custom(k8s)
    args = ("ray.io", "v1", "default", "rayjobs")
    obj = api.create_namespaced_custom_object(*args, _rayjob("j"))
    rv = obj["metadata"]["resourceVersion"]
    fresh = api.patch_namespaced_custom_object_status(
        *args, "j", {"metadata": {"resourceVersion": rv}, "status": {"jobStatus": "RUNNING"}}
    )
    with pytest.raises(ApiException) as e:
        api.patch_namespaced_custom_object_status(
            *args, "j", {"metadata": {"resourceVersion": rv}, "status": {"jobStatus": "FAILED"}}
        )
    assert e.value.status == 409
    assert api.get_namespaced_custom_object(*args, "j")["status"] == {"jobStatus": "RUNNING"}
    assert int(fresh["metadata"]["resourceVersion"]) > int(rv)


def test_foreground_deletion_removes_dependents_first(k8s, kube_api):
    from kubernetes.client import V1ConfigMap, V1DeleteOptions, V1ObjectMeta, V1OwnerReference

    core = _core(k8s)
    owner = core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="owner")))
    ref = V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="dep", owner_references=[ref])))
    mark = kube_api.store.rv
    core.delete_namespaced_config_map("owner", "default", body=V1DeleteOptions(propagation_policy="Foreground"))
    assert kube_api.get("configmaps", "owner")["metadata"]["finalizers"] == ["foregroundDeletion"]
    kube_api.collect_garbage()
    deleted = [e.obj["metadata"]["name"] for e in kube_api.store.events_since(mark) if e.type == "DELETED"]
    assert deleted == ["dep", "owner"]


def test_kopf_peering_option():
    from kubeapi import KubeAPIServer

    with KubeAPIServer(kopf_peering=True) as api:
        peering = api.create(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "trainkit"}}
        )
        assert "namespace" not in peering["metadata"] and api.exists("clusterkopfpeerings.kopf.dev", "trainkit", None)
        api.create({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "trainkit"}})
        assert api.exists("kopfpeerings.kopf.dev", "trainkit", "default")


def test_injected_requests_are_logged_and_not_applied(k8s, kube_api):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    kube_api.inject("*", r"/namespaces/default/configmaps$", 503, times=None, retry_after=1)
    for _ in range(2):
        with pytest.raises(ApiException) as e:
            core.create_namespaced_config_map("default", V1ConfigMap(metadata=V1ObjectMeta(name="a")))
        assert e.value.status == 503 and e.value.headers["Retry-After"] == "1"
    assert [(r.verb, r.resource, r.injected) for r in kube_api.requests] == [("create", "configmaps", True)] * 2
    assert not kube_api.exists("configmaps", "a")


def test_cluster_wide_paths_serve_only_list_and_watch(kube_api):
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", kube_api.port, timeout=10)
    conn.request("POST", "/api/v1/configmaps", body=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                                                "metadata": {"name": "a", "namespace": "default"}}))  # fmt: skip
    resp = conn.getresponse()
    assert resp.status == 405 and json.loads(resp.read())["reason"] == "MethodNotAllowed"
    conn.request("GET", "/api/v1/configmaps")
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["kind"] == "ConfigMapList"
    conn.close()


def test_fixture_points_an_already_imported_client_at_the_server(kube_api):
    import kubernetes  # imported by earlier tests already: its default location was captured then

    kubernetes.config.load_kube_config()
    names = [n.metadata.name for n in kubernetes.client.CoreV1Api().list_namespace().items]
    assert "kube-system" in names
    assert kube_api.requests_for("namespaces", "list")


def test_annotations_are_limited_to_256k(k8s):
    from kubernetes.client import V1ConfigMap, V1ObjectMeta
    from kubernetes.client.exceptions import ApiException

    core = _core(k8s)
    with pytest.raises(ApiException) as e:  # e.g. kubectl's last-applied-configuration of a huge CRD
        core.create_namespaced_config_map(
            "default", V1ConfigMap(metadata=V1ObjectMeta(name="a", annotations={"x": "y" * 262144}))
        )
    assert e.value.status == 422 and "must have at most 262144 bytes" in e.value.body
    core.create_namespaced_config_map(
        "default", V1ConfigMap(metadata=V1ObjectMeta(name="a", annotations={"x": "y" * 200000}))
    )
