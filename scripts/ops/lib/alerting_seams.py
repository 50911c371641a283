"""The alerting and dashboard seams between k8s/overlays/<env> and its cluster add-ons.

Routing reaches people only when (1) kube-prometheus-stack's Alertmanager selects the
AlertmanagerConfig (its labels, its namespace), (2) the route matches the alerts as they
are (matcher strategy None and a job matcher equal to the job the ServiceMonitor gives,
the Service's name), (3) every Secret key a receiver reads is made by an ExternalSecret
of the overlay, and (4) every severity of the rules reaches a receiver. Dashboards show
up only when the Grafana sidecar's label and namespaces match the ConfigMap, and their
datasource uid is the one kube-prometheus-stack provisions (the uid compose provisions).
check() proves these from the rendered manifests (scripts/ops/check-k8s).
"""

import glob
import os
import re

import yaml

import manifests


def _values(addon_docs, app):
    return manifests.find(addon_docs, "Application", app)["spec"]["source"]["helm"]["valuesObject"]


def _matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


def _route_matches(route, labels):
    for m in route.get("matchers", []):
        value, op = m["value"], m.get("matchType") or ("=~" if m.get("regex") else "=")
        got = labels.get(m["name"], "")
        ok = {"=": got == value, "!=": got != value,
              "=~": re.fullmatch(value, got) is not None, "!~": re.fullmatch(value, got) is None}[op]
        if not ok:
            return False
    return True


def receivers_for(route, labels):
    """The receivers an alert with `labels` reaches (Alertmanager's routing tree walk)."""
    if not _route_matches(route, labels):
        return []
    out = []
    for child in route.get("routes", []):
        got = receivers_for(child, labels)
        if got:
            out += got
            if not child.get("continue"):
                break
    return out or [route["receiver"]]


def rule_alerts():
    alerts = []
    for f in sorted(glob.glob(os.path.join(manifests.ROOT, "monitoring/prometheus/rules/*.yaml"))):
        for g in yaml.safe_load(open(f))["groups"]:
            alerts += [r for r in g["rules"] if "alert" in r]
    return alerts


def check(docs, addon_docs):
    errors, notes = [], []
    kps = _values(addon_docs, "kube-prometheus-stack")
    am = kps.get("alertmanager", {}).get("alertmanagerSpec", {})
    amc = manifests.find(docs, "AlertmanagerConfig", "todo-service")
    ns = amc["metadata"]["namespace"]
    if not am.get("alertmanagerConfigSelector") or not _matches(am.get("alertmanagerConfigSelector"),
                                                                 amc["metadata"].get("labels", {})):
        errors.append(f"kube-prometheus-stack alertmanagerConfigSelector {am.get('alertmanagerConfigSelector')} "
                      f"does not select AlertmanagerConfig todo-service {amc['metadata'].get('labels')}")
    if not _matches(am.get("alertmanagerConfigNamespaceSelector"), {"kubernetes.io/metadata.name": ns}) \
            or "alertmanagerConfigNamespaceSelector" not in am:
        errors.append(f"kube-prometheus-stack alertmanagerConfigNamespaceSelector does not select namespace {ns}")
    if am.get("alertmanagerConfigMatcherStrategy", {}).get("type") != "None":
        errors.append("kube-prometheus-stack alertmanagerConfigMatcherStrategy.type must be None: the alerts "
                      "aggregate by job and carry no namespace label, so OnNamespace would route none of them")
    # The job label Prometheus gives: the scraped Service's name (ServiceMonitor, no jobLabel).
    sm = manifests.find(docs, "ServiceMonitor", "todo-service")
    service = manifests.find(docs, "Service", "todo-service") if not sm["spec"].get("jobLabel") else None
    job = service["metadata"]["name"] if service else None
    route = amc["spec"]["route"]
    if job is None or not _route_matches(route, {"job": job}):
        errors.append(f"AlertmanagerConfig route matchers {route.get('matchers')} do not match job={job!r}")
    # Every Secret key of a receiver is made by an ExternalSecret of the overlay.
    def refs(node):
        if isinstance(node, dict):
            if set(node) >= {"name", "key"} and len(node) <= 3 and isinstance(node.get("key"), str):
                yield node["name"], node["key"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)
    names = {r["name"] for r in amc["spec"]["receivers"]}
    for secret, key in refs(amc["spec"]["receivers"]):
        keys = manifests.external_secret_keys(docs, secret)
        if keys is None or key not in keys:
            errors.append(f"AlertmanagerConfig reads Secret {secret} key {key}, which no ExternalSecret makes "
                          f"(it has {sorted(keys) if keys else 'no ExternalSecret'})")
    # Every alert of the rules reaches a receiver: critical pages, the rest goes to Slack.
    for alert in rule_alerts():
        labels = {"alertname": alert["alert"], "job": job or "", **{k: str(v) for k, v in alert["labels"].items()}}
        got = receivers_for(route, labels)
        if not got or not set(got) <= names:
            errors.append(f"{alert['alert']} reaches {got}, not a receiver of {sorted(names)}")
        if alert["labels"]["severity"] == "critical" and "pagerduty" not in got:
            errors.append(f"{alert['alert']} is critical but does not page (reaches {got})")
    notes.append(f"Alertmanager selects AlertmanagerConfig {ns}/todo-service; its route matches job={job}; "
                 f"{len(rule_alerts())} alerts reach {sorted(names)} (critical also pages)")

    # Dashboards: the sidecar finds the ConfigMap, whose datasource uid is provisioned.
    side = kps.get("grafana", {}).get("sidecar", {})
    dash = side.get("dashboards", {})
    cms = [d for d in docs if d["kind"] == "ConfigMap" and any(k.endswith(".json") for k in d.get("data", {}))]
    if not cms:
        errors.append("no dashboard ConfigMap in the overlay (k8s/generate-dashboards)")
    search = dash.get("searchNamespace")
    search = search if isinstance(search, list) else str(search or "").split(",")
    for cm in cms:
        labels = cm["metadata"].get("labels", {})
        if not dash.get("enabled") or labels.get(dash.get("label")) != str(dash.get("labelValue")):
            errors.append(f"ConfigMap {cm['metadata']['name']} labels {labels} are not what Grafana's sidecar "
                          f"loads ({dash.get('label')}={dash.get('labelValue')!r}, enabled {dash.get('enabled')})")
        if cm["metadata"]["namespace"] not in search and "ALL" not in search:
            errors.append(f"Grafana's sidecar searches {search}, not {cm['metadata']['namespace']}")
    uid = side.get("datasources", {}).get("uid")
    compose = set()
    for f in glob.glob(os.path.join(manifests.ROOT, "monitoring/grafana/provisioning/datasources/*.yaml")):
        compose |= {d["uid"] for d in yaml.safe_load(open(f)).get("datasources", []) if d.get("type") == "prometheus"}
    if uid not in compose:
        errors.append(f"kube-prometheus-stack's Prometheus datasource uid {uid!r} is not the one compose "
                      f"provisions ({sorted(compose)}): dashboards would differ")
    notes.append(f"Grafana sidecar loads {', '.join(c['metadata']['name'] for c in cms)} from {search}; "
                 f"Prometheus datasource uid {uid!r} as in compose")
    return errors, notes
