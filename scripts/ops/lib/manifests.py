"""Rendered kustomize output, read the way the cluster reads it.

Shared by the ops checks (scripts/ops/check-*) that need more than "it renders": the
custom resources against their vendored CRD schemas (k8s/schemas), the environment a
container really gets, the autoscaling seams, the connection budget. Needs PyYAML (in
.local/venv, installed by scripts/ops/tools) and kubectl (for `kubectl kustomize`).
"""

import json
import os
import re
import subprocess

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SCHEMAS = os.path.join(ROOT, "k8s", "schemas")


def render(target):
    """`kubectl kustomize <target>` as a list of documents (empty ones dropped)."""
    out = subprocess.run(
        ["kubectl", "kustomize", target], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def overlays(parent="k8s/overlays"):
    """The overlay directories under parent (those with a kustomization.yaml), sorted."""
    base = os.path.join(ROOT, parent)
    return sorted(
        os.path.join(parent, name)
        for name in os.listdir(base)
        if os.path.isfile(os.path.join(base, name, "kustomization.yaml"))
    )


def find(docs, kind, name=None):
    """The one document of that kind (and name); raises when there is not exactly one."""
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(hits) != 1:
        raise LookupError(f"expected one {kind} {name or ''}, found {len(hits)}")
    return hits[0]


def group_version(doc):
    """("monitoring.coreos.com", "v1") for apiVersion monitoring.coreos.com/v1; ("", "v1") for v1."""
    api = doc.get("apiVersion", "")
    return tuple(api.split("/", 1)) if "/" in api else ("", api)


def schema_path(doc):
    """Where the vendored JSON schema of a custom resource lives (k8s/schemas/<group>/<kind>_<version>.json)."""
    group, version = group_version(doc)
    return os.path.join(SCHEMAS, group, f"{doc['kind'].lower()}_{version}.json")


def has_schema(doc):
    return bool(group_version(doc)[0]) and os.path.isfile(schema_path(doc))


def validate_custom_resource(doc):
    """Errors (strings) of a custom resource against its vendored CRD schema."""
    import jsonschema  # in .local/venv with check-jsonschema

    with open(schema_path(doc)) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema)
    errors = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in err.path) or "(root)"
        errors.append(f"{doc['kind']}/{doc['metadata'].get('name')}: {where}: {err.message[:300]}")
    return errors


def pod_spec(doc):
    """The pod spec of a Deployment, StatefulSet, DaemonSet or Job."""
    return doc["spec"]["template"]["spec"]


def container(doc, name=None):
    """The named container of a workload (the only one when name is None)."""
    containers = pod_spec(doc)["containers"]
    if name is None:
        if len(containers) != 1:
            raise LookupError(f"{doc['kind']}/{doc['metadata']['name']}: {len(containers)} containers")
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def configmap_data(docs, name):
    """data of the ConfigMap that a (possibly hash-suffixed) name refers to."""
    return dict(find(docs, "ConfigMap", name).get("data") or {})


def external_secret_keys(docs, secret_name):
    """Keys that the ExternalSecret targeting Secret `secret_name` puts into it."""
    for d in docs:
        if d["kind"] == "ExternalSecret" and d["spec"].get("target", {}).get("name") == secret_name:
            return {item["secretKey"] for item in d["spec"].get("data", [])}
    return None


def env_of(docs, c):
    """The environment a container gets, in Kubernetes order (envFrom, then env).

    Returns (plain, secrets): plain maps name → value (ConfigMap values included);
    secrets maps name → (secret name, key) for every secretKeyRef, to be filled with
    stand-ins. Raises on anything it does not know how to resolve (fieldRef, a
    missing ConfigMap key...), so a new kind of wiring cannot pass unexamined.
    """
    plain, secrets = {}, {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            prefix = source.get("prefix", "")
            for k, v in configmap_data(docs, source["configMapRef"]["name"]).items():
                plain[prefix + k] = v
        else:
            raise ValueError(f"envFrom source not handled: {source}")
    for var in c.get("env", []):
        name = var["name"]
        if "value" in var:
            plain[name] = var["value"]
            secrets.pop(name, None)
            continue
        ref = var.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            data = configmap_data(docs, ref["configMapKeyRef"]["name"])
            plain[name] = data[ref["configMapKeyRef"]["key"]]
            secrets.pop(name, None)
        elif "secretKeyRef" in ref:
            plain.pop(name, None)
            secrets[name] = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        else:
            raise ValueError(f"env {name}: valueFrom not handled: {ref}")
    return plain, secrets


def mounted_source(doc, c, path):
    """(volume, mount) whose mountPath contains `path`, or (None, None)."""
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    for m in c.get("volumeMounts", []):
        mount = m["mountPath"].rstrip("/") + "/"
        if path.startswith(mount):
            return volumes.get(m["name"]), m
    return None, None


def image_of(doc, name=None):
    return container(doc, name)["image"]


DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
