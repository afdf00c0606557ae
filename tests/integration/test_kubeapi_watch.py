"""Watch streams of the test API server behave like a kube-apiserver's: resourceVersion resumption,
410 for compacted history, timeoutSeconds, selectors, and streams cut by the test hook."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest


CM = "/api/v1/namespaces/default/configmaps"


def _cm(name, labels=None, data=None):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data or {},
    }


def _call(api, method, path, body=None, ctype="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"null")
    conn.close()
    return resp.status, data


def _watch(api, path, timeout=10):
    """Open a watch; returns (response, connection). Read events with _events()."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=timeout)
    conn.request("GET", path)
    return conn.getresponse(), conn


def _events(resp, n=None):
    out = []
    while n is None or len(out) < n:
        line = resp.readline()
        if not line:
            break
        out.append(json.loads(line))
    return out


def test_watch_from_resource_version_gets_only_later_events(kube_api):
    _call(kube_api, "POST", CM, _cm("before"))
    code, listed = _call(kube_api, "GET", CM)
    rv = listed["metadata"]["resourceVersion"]
    _call(kube_api, "POST", CM, _cm("after"))
    _call(kube_api, "PATCH", f"{CM}/before", {"data": {"x": "1"}}, "application/merge-patch+json")
    _call(kube_api, "DELETE", f"{CM}/after")
    resp, conn = _watch(kube_api, f"{CM}?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    events = _events(resp)
    conn.close()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")
    ]  # fmt: skip
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert events[1]["object"]["data"] == {"x": "1"}
    assert all(e["object"]["kind"] == "ConfigMap" and e["object"]["apiVersion"] == "v1" for e in events)


def test_watch_without_resource_version_starts_with_current_state_then_live(kube_api):
    _call(kube_api, "POST", CM, _cm("a"))
    resp, conn = _watch(kube_api, f"{CM}?watch=true&timeoutSeconds=5")
    first = _events(resp, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in first] == [("ADDED", "a")]
    _call(kube_api, "POST", CM, _cm("b"))
    live = _events(resp, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in live] == [("ADDED", "b")]
    conn.close()


def test_watch_too_old_resource_version_is_410(kube_api):
    _, created = _call(kube_api, "POST", CM, _cm("a"))
    old = created["metadata"]["resourceVersion"]
    _call(kube_api, "POST", CM, _cm("b"))
    kube_api.compact()  # as etcd compaction: the history up to now is gone
    resp, conn = _watch(kube_api, f"{CM}?watch=true&resourceVersion={old}")
    events = _events(resp)
    conn.close()
    assert resp.status == 200  # as a real server: the error is an event of the stream
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_bounded_history_expires_old_versions(kube_api):
    kube_api.store.history_limit = 5
    _, first = _call(kube_api, "POST", CM, _cm("a"))
    for i in range(10):
        _call(kube_api, "PATCH", f"{CM}/a", {"data": {"i": str(i)}}, "application/merge-patch+json")
    resp, conn = _watch(kube_api, f"{CM}?watch=true&resourceVersion={first['metadata']['resourceVersion']}")
    assert _events(resp)[0]["object"]["code"] == 410
    conn.close()
    _, cur = _call(kube_api, "GET", f"{CM}/a")
    resp, conn = _watch(
        kube_api, f"{CM}?watch=true&resourceVersion={int(cur['metadata']['resourceVersion']) - 2}&timeoutSeconds=1"
    )
    recent = _events(resp)
    conn.close()
    assert [e["object"]["data"]["i"] for e in recent] == ["8", "9"]


def test_python_client_watch_raises_410_for_expired(kube_api):
    import kubernetes
    from kubernetes.client.exceptions import ApiException

    client = kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", _cm("a"))
    kube_api.compact()
    with pytest.raises(ApiException) as e:
        for _ in kubernetes.watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2
        ):
            pass
    assert e.value.status == 410
    client.close()


def test_python_client_watch_with_timeout(kube_api):
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=str(kube_api.kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    threading.Timer(0.3, lambda: kube_api.create(_cm("late"))).start()
    start = time.monotonic()
    seen = [(e["type"], e["object"].metadata.name)
            for e in kubernetes.watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1)]  # fmt: skip
    elapsed = time.monotonic() - start
    assert seen == [("ADDED", "late")]
    assert 0.9 <= elapsed < 5, elapsed
    client.close()


def test_timeout_seconds_ends_the_stream(kube_api):
    start = time.monotonic()
    resp, conn = _watch(kube_api, f"{CM}?watch=true&timeoutSeconds=1&allowWatchBookmarks=true")
    events = _events(resp)
    elapsed = time.monotonic() - start
    conn.close()
    assert 0.9 <= elapsed < 5, elapsed
    assert [e["type"] for e in events] == ["BOOKMARK"]
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= 1


def test_drop_watches_cuts_open_streams(kube_api):
    resp, conn = _watch(kube_api, f"{CM}?watch=true", timeout=10)
    deadline = time.monotonic() + 5
    while kube_api.open_watches == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kube_api.open_watches == 1
    start = time.monotonic()
    kube_api.drop_watches()
    assert _events(resp) == []
    assert time.monotonic() - start < 2
    conn.close()


def test_watch_label_selector_transitions(kube_api):
    _call(kube_api, "POST", CM, _cm("a", {"team": "x"}))
    _, listed = _call(kube_api, "GET", CM)
    rv = listed["metadata"]["resourceVersion"]
    _call(kube_api, "POST", CM, _cm("b", {"team": "y"}))  # never selected
    _call(
        kube_api, "PATCH", f"{CM}/a", {"metadata": {"labels": {"team": "y"}}}, "application/merge-patch+json"
    )  # leaves
    _call(
        kube_api, "PATCH", f"{CM}/b", {"metadata": {"labels": {"team": "x"}}}, "application/merge-patch+json"
    )  # enters
    resp, conn = _watch(kube_api, f"{CM}?watch=true&resourceVersion={rv}&labelSelector=team%3Dx&timeoutSeconds=1")
    events = _events(resp)
    conn.close()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "a"), ("ADDED", "b")]


def test_watch_is_scoped_to_resource_and_namespace(kube_api):
    _call(
        kube_api, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}
    )
    _, listed = _call(kube_api, "GET", CM)
    rv = listed["metadata"]["resourceVersion"]
    _call(kube_api, "POST", "/api/v1/namespaces/other/configmaps", _cm("elsewhere"))
    _call(
        kube_api,
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}},
    )
    _call(kube_api, "POST", CM, _cm("here"))
    resp, conn = _watch(kube_api, f"{CM}?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    assert [e["object"]["metadata"]["name"] for e in _events(resp)] == ["here"]
    conn.close()
    resp, conn = _watch(kube_api, f"/api/v1/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    assert sorted(e["object"]["metadata"]["name"] for e in _events(resp)) == ["elsewhere", "here"]
    conn.close()


def test_finalized_delete_is_modified_then_deleted(kube_api):
    _call(kube_api, "POST", CM, {**_cm("a"), "metadata": {"name": "a", "finalizers": ["x/y"]}})
    _, listed = _call(kube_api, "GET", CM)
    rv = listed["metadata"]["resourceVersion"]
    code, body = _call(kube_api, "DELETE", f"{CM}/a")
    assert code == 200
    assert kube_api.exists("configmaps", "a")
    _call(kube_api, "PATCH", f"{CM}/a", {"metadata": {"finalizers": []}}, "application/merge-patch+json")
    assert not kube_api.exists("configmaps", "a")
    resp, conn = _watch(kube_api, f"{CM}?watch=true&resourceVersion={rv}&timeoutSeconds=1")
    events = _events(resp)
    conn.close()
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert events[0]["object"]["metadata"]["deletionTimestamp"]


def test_client_going_away_ends_its_watch(kube_api):
    resp, conn = _watch(kube_api, f"{CM}?watch=true")
    deadline = time.monotonic() + 5
    while kube_api.open_watches == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kube_api.open_watches == 1
    conn.sock.close()
    conn.close()
    deadline = time.monotonic() + 5
    while kube_api.open_watches and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kube_api.open_watches == 0 and not kube_api.store.listeners


def test_drop_watches_abort_cuts_the_connection(kube_api):
    resp, conn = _watch(kube_api, f"{CM}?watch=true")
    deadline = time.monotonic() + 5
    while kube_api.open_watches == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    kube_api.drop_watches(abort=True)
    with pytest.raises((http.client.IncompleteRead, ConnectionError, http.client.HTTPException)):
        resp.read()  # no terminating chunk: the read fails instead of ending cleanly
    conn.close()
