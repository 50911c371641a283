"""The autoscaling seams: HPA ↔ prometheus-adapter ↔ Prometheus ↔ the binary's /metrics.

An HPA on a custom metric scales only when (1) an adapter rule serves a metric of that
name for pods, (2) the adapter asks the Prometheus that scrapes the service, (3) that
Prometheus selects the service's ServiceMonitor, and (4) the service exports the series
the rule reads. check_static() proves 1-3 from the rendered manifests (scripts/ops/check-k8s);
check_series_exported() proves 4 against the running binary (scripts/ops/check-deploy-env).
"""

import os
import re

import manifests

SERIES_NAME = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def addons_overlay(overlay):
    """k8s/cluster-addons/overlays/<env> for k8s/overlays/<env>."""
    return os.path.join("k8s/cluster-addons/overlays", os.path.basename(overlay))


def application(addon_docs, name):
    return manifests.find(addon_docs, "Application", name)


def adapter_rules(addon_docs):
    values = application(addon_docs, "prometheus-adapter")["spec"]["source"]["helm"]["valuesObject"]
    return values.get("rules", {}).get("custom", [])


def rule_series(rule):
    """The metric name a rule's seriesQuery selects (only plain metric names are supported)."""
    m = SERIES_NAME.match(rule["seriesQuery"])
    if not m or "__name__" in rule["seriesQuery"]:
        raise ValueError(f"seriesQuery {rule['seriesQuery']!r}: name the series plainly")
    return m.group(1)


def rule_metric_name(rule):
    """The name the adapter serves a rule's series under (name.matches / name.as)."""
    series = rule_series(rule)
    name = rule.get("name", {})
    pattern = name.get("matches", "^(.*)$")
    m = re.search(pattern, series)
    if not m:
        raise ValueError(f"rule for {series}: name.matches {pattern!r} does not match the series")
    as_ = name.get("as", "$1" if m.groups() else "$0")
    return re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))), as_)


def hpa_custom_metrics(docs):
    """(metric name, type, target) of each non-Resource metric of the todo-service HPA."""
    hpa = manifests.find(docs, "HorizontalPodAutoscaler", "todo-service")
    out = []
    for m in hpa["spec"]["metrics"]:
        kind = m["type"]
        if kind == "Resource":
            continue
        spec = m[kind[0].lower() + kind[1:]]
        out.append((spec["metric"]["name"], kind, spec["target"]))
    return out


def served_rule(addon_docs, metric, kind):
    for rule in adapter_rules(addon_docs):
        if rule_metric_name(rule) != metric:
            continue
        overrides = rule.get("resources", {}).get("overrides", {})
        resources = {v.get("resource") for v in overrides.values()}
        if kind == "Pods" and not {"pod", "namespace"} <= resources:
            continue
        return rule
    return None


def check_static(docs, addon_docs):
    """(errors, notes) for one environment: k8s/overlays/<env> with its cluster add-ons."""
    errors, notes = [], []
    config = manifests.configmap_data(docs, manifests.container(
        manifests.find(docs, "Deployment", "todo-service"), "todo-service")["envFrom"][0]["configMapRef"]["name"])
    max_in_flight = int(config.get("MAX_IN_FLIGHT", "1024"))

    # 1. Every custom metric of the HPA is served by an adapter rule for pods.
    for metric, kind, target in hpa_custom_metrics(docs):
        if kind != "Pods":
            errors.append(f"HPA metric {metric}: type {kind} is not served by any rule here (use Pods)")
            continue
        rule = served_rule(addon_docs, metric, kind)
        if rule is None:
            errors.append(f"HPA metric {metric}: no prometheus-adapter rule serves it as a pods metric "
                          "(k8s/cluster-addons/base/prometheus-adapter.yaml)")
            continue
        if "metricsQuery" not in rule:
            errors.append(f"adapter rule for {metric}: no metricsQuery")
        value = float(str(target.get("averageValue", "0")).rstrip("m") or 0)
        if metric == "http_in_flight_requests" and not 0 < value <= max_in_flight / 4:
            errors.append(f"HPA target {value} in flight per pod must be above 0 and at most a quarter of "
                          f"MAX_IN_FLIGHT ({max_in_flight}), so pods are added before they shed load")
        notes.append(f"HPA metric {metric} (target {target.get('averageValue')}/pod, MAX_IN_FLIGHT "
                     f"{max_in_flight}) ← prometheus-adapter rule on series {rule_series(rule)}")

    # 2. The adapter asks kube-prometheus-stack's Prometheus.
    kps = application(addon_docs, "kube-prometheus-stack")
    release = kps["spec"]["source"]["helm"].get("releaseName", kps["metadata"]["name"])
    namespace = kps["spec"]["destination"]["namespace"]
    prometheus = f"http://{release}-prometheus.{namespace}.svc"
    adapter = application(addon_docs, "prometheus-adapter")["spec"]["source"]["helm"]["valuesObject"]
    if adapter.get("prometheus", {}).get("url", "").rstrip("/") not in (prometheus, prometheus + ".cluster.local"):
        errors.append(f"prometheus-adapter asks {adapter.get('prometheus', {}).get('url')}, but "
                      f"kube-prometheus-stack's Prometheus is {prometheus}")
    if adapter.get("prometheus", {}).get("port") != 9090:
        errors.append("prometheus-adapter: prometheus.port must be 9090 (the Prometheus Service's port)")

    # 3. That Prometheus selects the ServiceMonitor and the PrometheusRule, and may scrape.
    spec = kps["spec"]["source"]["helm"]["valuesObject"]["prometheus"]["prometheusSpec"]
    for kind, selector in (("ServiceMonitor", "serviceMonitorSelector"), ("PrometheusRule", "ruleSelector")):
        want = spec.get(selector, {}).get("matchLabels", {})
        got = manifests.find(docs, kind, "todo-service")["metadata"].get("labels", {})
        if not want or any(got.get(k) != v for k, v in want.items()):
            errors.append(f"{kind} todo-service labels {got} do not match kube-prometheus-stack's "
                          f"{selector} {want}")
    admits_monitoring = any(
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == namespace
        for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "todo-service-ingress"
        for rule in d["spec"].get("ingress", []) for peer in rule.get("from", []))
    if not admits_monitoring:
        errors.append(f"NetworkPolicy todo-service-ingress does not admit namespace {namespace} (Prometheus)")
    notes.append(f"prometheus-adapter → {prometheus}:9090 (release {release}), which selects the "
                 f"ServiceMonitor and PrometheusRule and may scrape the admin port")
    return errors, notes


def exported_names(metrics_text):
    """Metric family names in a Prometheus text exposition."""
    names = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, 1)[0])
    return names


def check_series_exported(docs, addon_docs, metrics_text):
    """(errors, notes): every series an adapter rule reads for the HPA is on /metrics."""
    names = exported_names(metrics_text)
    errors, notes = [], []
    for metric, kind, _ in hpa_custom_metrics(docs):
        rule = served_rule(addon_docs, metric, kind)
        if rule is None:
            errors.append(f"HPA metric {metric}: no adapter rule serves it")
            continue
        series = rule_series(rule)
        if series in names:
            notes.append(f"ok: /metrics exports {series}, the series behind the HPA's pods metric {metric}")
        else:
            errors.append(f"HPA metric {metric} reads series {series}, which the binary's /metrics "
                          f"does not export")
    return errors, notes
