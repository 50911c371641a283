"""Helm values of the Argo CD Applications against the keys their pinned charts know.

No chart repository is reachable offline, so nothing here renders a chart. What is
checked instead: every key path set in an Application's `helm.valuesObject` exists in
the default values.yaml of that chart at that version, or lies below a key whose
default is a free-form map or list (`{}`, `[]`, null), or below a path the index marks
free-form by hand (with its reason). That catches misspelt and moved keys, which Helm
itself silently ignores. The indexes live in k8s/cluster-addons/charts/<chart>-<version>.json
and are made by `k8s/cluster-addons/chart-keys` from the chart's values.yaml.
"""

import json
import os

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
INDEX_DIR = os.path.join(ROOT, "k8s", "cluster-addons", "charts")


def index_values(text):
    """(paths, open_paths) of a values.yaml: every mapping key path, and the paths whose
    default is an empty map, a list or null (anything may be set below them)."""
    paths, open_paths = set(), set()

    def walk(node, prefix):
        if isinstance(node, dict):
            if not node and prefix:
                open_paths.add(prefix)
            for k, v in node.items():
                p = prefix + (str(k),)
                paths.add(p)
                walk(v, p)
        elif isinstance(node, list) or node is None:
            if prefix:
                open_paths.add(prefix)

    walk(yaml.safe_load(text) or {}, ())
    return paths, open_paths


def index_path(chart, version):
    return os.path.join(INDEX_DIR, f"{chart}-{version}.json")


def load_index(chart, version):
    with open(index_path(chart, version)) as f:
        data = json.load(f)
    return (
        {tuple(p) for p in data["paths"]},
        {tuple(p) for p in data["open"]},
        {tuple(k.split("/")): reason for k, reason in data.get("free", {}).items()},
    )


def set_paths(values, prefix=()):
    """The key paths a valuesObject sets (leaves and maps alike)."""
    out = []
    if isinstance(values, dict):
        for k, v in values.items():
            p = prefix + (str(k),)
            out.append(p)
            out.extend(set_paths(v, p))
    return out


def unknown_keys(values, chart, version):
    paths, open_paths, free = load_index(chart, version)
    errors = []
    for p in set_paths(values):
        if p in paths:
            continue
        if any(p[:i] in open_paths or p[:i] in free for i in range(1, len(p))):
            continue
        errors.append(".".join(p))
    # Report the shortest unknown paths only (their children are unknown too).
    return sorted(e for e in errors if not any(e.startswith(o + ".") for o in errors if o != e))


def check_applications(docs):
    """Errors for the Helm Applications among docs; returns (errors, checked)."""
    errors, checked = [], []
    for d in docs:
        if d.get("kind") != "Application":
            continue
        src = d["spec"].get("source", {})
        if "chart" not in src:
            continue
        chart, version = src["chart"], src["targetRevision"]
        name = d["metadata"]["name"]
        if not os.path.isfile(index_path(chart, version)):
            errors.append(f"Application {name}: no key index for {chart} {version} "
                          f"(k8s/cluster-addons/charts/{chart}-{version}.json): make it with "
                          f"k8s/cluster-addons/chart-keys")
            continue
        values = src.get("helm", {}).get("valuesObject", {})
        for key in unknown_keys(values, chart, version):
            errors.append(f"Application {name}: {chart} {version} has no value `{key}`")
        checked.append(f"{name} ({chart} {version})")
    return errors, checked
