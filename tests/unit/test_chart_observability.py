"""The chart's metrics endpoint, ServiceMonitor and Grafana dashboard (rendered by the real helm).

The ServiceMonitor is validated against prometheus-operator's own CRD schema (v0.93.0, tests/data/prometheus-operator,
made by tests/support/prometheus_operator_schema.py), unknown fields included (a structural schema prunes them);
every metric name in the dashboard's PromQL must be one the operator's registry or the trainer's Ray metrics export.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from support.helm import CHART, by_kind, one, render, template
from support.prometheus_operator_schema import load as servicemonitor_schema

ALL_ON = {
    "operator": {
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus"}}},
        "grafanaDashboard": {"enabled": True, "labels": {"team": "ml"}},
    }
}

# PromQL words that are not metric names: functions, aggregations and their modifiers, keywords.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "label_values", "label_replace",
    "abs", "clamp_min", "clamp_max", "time", "vector", "scalar", "absent", "changes", "resets",
    "max_over_time", "min_over_time", "avg_over_time", "sum_over_time", "last_over_time", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a small reader of the subset dashboards use): strings,
    label matchers {...}, grouping clauses by/without (...), ranges [...] and numbers are removed; what is left
    that is an identifier, not a PromQL word and not called as a function, is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = m.group(0), text[m.end() :].lstrip()
        if word.lower() in PROMQL_WORDS or rest.startswith("("):
            continue
        names.add(word)
    # label_values(metric, label): the second argument is a label name, not a metric
    return names - set(re.findall(r"label_values\([^,]*,\s*([A-Za-z_][A-Za-z0-9_]*)\)", re.sub(r"\{[^}]*\}", "", expr)))


def test_metric_names_reader():
    assert metric_names('histogram_quantile(0.95, sum by (le, kind) (rate(x_bucket{a="b,c"}[5m])))') == {"x_bucket"}
    assert metric_names('sum(a{phase=~"Pending|Queued"}) / on(ns) group_left b') == {"a", "b"}
    assert metric_names('label_values(ray_step{namespace=~"$ns"}, run)') == {"ray_step"}
    assert metric_names("max by (run) (m) > 0.5") == {"m"}


def exported_names() -> set[str]:
    """Every sample name the operator's registry serves, and the trainer's gauges as Ray's export names them."""
    from trainkit.train.tracking import RAY_EXPORT_PREFIX, TRAINER_METRICS
    from trainkit_operator.wiring import new_metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in new_metrics().registry.collect():
        names |= {family.name + s for s in suffixes[family.type]}
    return names | {RAY_EXPORT_PREFIX + name for name in TRAINER_METRICS}


def dashboard_queries(dashboard: dict) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def test_dashboard_references_only_exported_metrics():
    dashboard = json.loads((CHART / "dashboards" / "trainkit.json").read_text())
    exprs = dashboard_queries(dashboard)
    assert len(exprs) >= 15
    used = set().union(*(metric_names(e) for e in exprs))
    exported = exported_names()
    assert used - exported == set(), f"the dashboard queries metrics nobody exports: {sorted(used - exported)}"
    # every operator metric and every trainer gauge has a panel
    from trainkit.train.tracking import RAY_EXPORT_PREFIX, TRAINER_METRICS
    from trainkit_operator.metrics import METRIC_NAMES

    for name in METRIC_NAMES:
        assert any(u.startswith(name.removesuffix("_total")) for u in used), f"no panel shows {name}"
    for name in TRAINER_METRICS:
        assert RAY_EXPORT_PREFIX + name in used, f"no panel shows {name}"


def undeclared(schema: dict, value, path: str = "") -> list[str]:
    """Fields of `value` the structural schema does not declare (the API server would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(value, dict) and "properties" in schema:
        for k, v in value.items():
            if k not in schema["properties"]:
                out.append(f"{path}.{k}")
            else:
                out += undeclared(schema["properties"][k], v, f"{path}.{k}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for k, v in value.items():
            out += undeclared(schema["additionalProperties"], v, f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += undeclared(schema["items"], v, f"{path}[{i}]")
    return out


def test_service_monitor_validates_against_prometheus_operator_schema():
    docs = render(values=ALL_ON)
    monitor = one(docs, "ServiceMonitor")
    schema = servicemonitor_schema()
    jsonschema.validate(monitor, schema)
    assert undeclared(schema, monitor) == []
    service = one(docs, "Service")
    # it selects the metrics Service by its labels, and names the Service's port
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    # the schema does catch mistakes: a numeric port and a misspelt field
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["port"] = 8081
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken["spec"]["endpoints"][0] = {"port": "metrics", "intervall": "15s"}
    assert undeclared(schema, broken) == [".spec.endpoints[0].intervall"]


def test_metrics_endpoint_service_and_dashboard_configmap():
    docs = render(values=ALL_ON)
    dep = one(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TRAINKIT_METRICS_PORT"] == "8081" and env["TRAINKIT_METRICS_HOST"] == "0.0.0.0"
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in c["ports"]
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["team"] == "ml"
    dashboard = json.loads(cm["data"]["trainkit.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "trainkit.json").read_text())
    # from the operator's own config reader: the port and address the chart sets are the ones served
    from trainkit_operator.config import OperatorConfig

    config = OperatorConfig.from_env({k: v for k, v in env.items() if v is not None})
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", 8081)


def test_defaults_and_switches():
    docs = render()
    assert by_kind(docs, "ServiceMonitor") == [] and by_kind(docs, "ConfigMap") == []  # both opt-in
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == 8081
    off = render(values={"operator": {"metrics": {"enabled": False}}})
    assert by_kind(off, "Service") == []
    (c,) = one(off, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "TRAINKIT_METRICS_PORT" not in {e["name"] for e in c["env"]}
    local = render(values={"operator": {"metrics": {"port": 9100, "bindAddress": "127.0.0.1"}}})
    (c,) = one(local, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in c["env"]}["TRAINKIT_METRICS_HOST"] == "127.0.0.1"
    clash = template(values={"operator": {"metrics": {"port": 8080}}}, check=False)
    assert clash.returncode != 0 and "operator.metrics.port must differ from operator.healthPort" in clash.stderr
    bad = template(values={"operator": {"metrics": {"port": 80}}}, check=False)
    assert bad.returncode != 0 and "operator.metrics.port" in bad.stderr
