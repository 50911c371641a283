"""The metrics contract, checked against the running binary (scripts/ops/check-metrics-contract).

1. Start the built binary on free 127.0.0.1 ports, with a fresh database on the local
   PostgreSQL and, when a NATS server is reachable, NATS under a unique NATS_PREFIX (so
   the NATS families and the nats-* actors are real); scrape /metrics at start.
2. Drive a little traffic: creates, gets, a 404, a 412, a list, an unmatched path, a
   NATS request and a JetStream command, and a change-feed GET held open while /metrics
   is scraped; then scrape again once the outbox has published the events.
3. Check the scrapes against monitoring/metrics-contract.yaml: every family exported with
   HELP text and its type, nothing exported that the contract does not list (families and
   label values), and the gauges really set (database up, actors up, NATS connected,
   feed streams and connections counted while a stream is open).
4. Check every reference: each metric named in monitoring/prometheus/rules, the promtool
   tests, the Grafana dashboards and k8s/ (PrometheusRule, HPA through prometheus-adapter,
   dashboard ConfigMaps) is exported (recording rules and Prometheus' own series aside),
   and every label matcher on the service's labels can match a value the service emits
   (regexes included); histogram `le` values must be real bucket bounds.
5. Self-test: a rule with a deliberately wrong metric name and one with a wrong label
   value must both be reported, or the check itself is broken.
6. SIGTERM by PID, drop the database, delete the prefix's JetStream streams.

Environment: TODO_SERVICE_BIN, PG_SERVER_URL, NATS_URL (optional), ROOT.
"""

import asyncio
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = os.environ.get("ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../../.."))
CONTRACT = os.path.join(ROOT, "monitoring/metrics-contract.yaml")
READY_S = 60


class CheckFailed(Exception):
    pass


def say(msg=""):
    print(f"   {msg}" if msg else "", flush=True)


# --- the contract ------------------------------------------------------------------------------

def expand(specs):
    """(literal values, regex patterns) of a label's value list."""
    literals, patterns = set(), []
    for s in specs:
        if isinstance(s, str):
            literals.add(s)
        elif "range" in s:
            lo, hi = s["range"]
            literals.update(s.get("format", "{}").format(i) for i in range(lo, hi + 1))
        elif "pattern" in s:
            patterns.append(re.compile(s["pattern"]))
        else:
            raise ValueError(f"value spec {s!r}: a string, {{format, range}} or {{pattern}}")
    return literals, patterns


class Contract:
    def __init__(self, path=CONTRACT):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        self.families = {}
        for name, spec in data["families"].items():
            labels = {k: expand(v) for k, v in (spec.get("labels") or {}).items()}
            self.families[name] = {"type": spec["type"], "labels": labels}
        self.process = set(data.get("process_families", []))
        self.builtins = set(data.get("prometheus_builtins", []))
        self.target_labels = set(data.get("target_labels", []))
        # Sample name (as in the text format and in PromQL) -> family.
        self.samples = {}
        for name, spec in self.families.items():
            if spec["type"] == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    self.samples[name + suffix] = name
            else:
                self.samples[name] = name
        for name in self.process:
            self.samples[name] = name

    def label_names(self):
        return {label for spec in self.families.values() for label in spec["labels"]}

    def values(self, families, label):
        """Union of (literals, patterns) of `label` over `families`."""
        literals, patterns = set(), []
        for fam in families:
            lit, pat = self.families.get(fam, {}).get("labels", {}).get(label, (set(), []))
            literals |= lit
            patterns += pat
        return literals, patterns


def allowed(value, literals, patterns):
    return value in literals or any(p.fullmatch(value) for p in patterns)


# --- scraping -------------------------------------------------------------------------------------

class Scrape:
    """One /metrics text: families with help and type, and samples."""

    def __init__(self, text):
        self.text = text
        self.families = {}  # name -> (type, help)
        self.samples = []   # (sample name, labels, value)
        for fam in text_string_to_metric_families(text):
            # prometheus_client strips _total from counter family names: keep the text's.
            self.families[fam.name] = (fam.type, fam.documentation)
            for s in fam.samples:
                self.samples.append((s.name, dict(s.labels), s.value))
        # Family names exactly as the text's # TYPE lines write them.
        self.types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
        self.helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
        self.sample_names = {name for name, _, _ in self.samples}

    def value(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total, found = 0.0, False
        for n, lab, v in self.samples:
            if n == name and all(lab.get(k) == val for k, val in labels.items()):
                total += v
                found = True
        return total if found else None

    def label_values(self, family, label, contract):
        names = [s for s, f in contract.samples.items() if f == family]
        return {lab[label] for n, lab, _ in self.samples if n in names and label in lab}

    def buckets(self, family):
        return {float(lab["le"]) for n, lab, _ in self.samples if n == family + "_bucket"}


def check_scrape(scrape, contract, when):
    """Errors: the exported families and label values against the contract."""
    errors = []
    exported = set(scrape.types)
    for name, spec in contract.families.items():
        if name not in exported:
            errors.append(f"{when}: family {name} is not exported")
            continue
        if scrape.types[name] != spec["type"]:
            errors.append(f"{when}: {name} is a {scrape.types[name]}, the contract says {spec['type']}")
        if not scrape.helps.get(name, "").strip():
            errors.append(f"{when}: {name} has no HELP text")
    for name in sorted(exported - set(contract.families) - contract.process):
        errors.append(f"{when}: the binary exports {name} ({scrape.types[name]}), which "
                      "monitoring/metrics-contract.yaml does not list: add it there (with its labels)")
    for name in sorted(contract.process - exported):
        errors.append(f"{when}: process family {name} is not exported")
    unknown = {}
    for sample, labels, _ in scrape.samples:
        fam = contract.samples.get(sample)
        if fam is None:
            continue
        spec = contract.families.get(fam, {"labels": {}})
        for label, value in labels.items():
            if label == "le" and sample.endswith("_bucket"):
                continue
            if label not in spec["labels"]:
                unknown.setdefault((fam, label, "label"), value)
            elif not allowed(value, *spec["labels"][label]):
                unknown.setdefault((fam, label, value), value)
        missing = set(spec["labels"]) - set(labels)
        if missing and not (sample.endswith("_bucket") and missing == {"le"}):
            unknown.setdefault((fam, ",".join(sorted(missing)), "missing"), "")
    for (fam, label, what), value in sorted(unknown.items()):
        if what == "label":
            errors.append(f"{when}: {fam} has a label {label} ({label}={value!r}) that the contract does not list")
        elif what == "missing":
            errors.append(f"{when}: {fam} has a series without its label(s) {label}")
        else:
            errors.append(f"{when}: {fam}{{{label}={what!r}}} is emitted but not in the contract's values")
    return errors


# --- references in monitoring/ and k8s/ -----------------------------------------------------------

GRAFANA_VARS = [
    (re.compile(r"\$__(rate_)?interval|\$\{__(rate_)?interval\}|\$__range|\$\{__range\}"), "5m"),
    (re.compile(r"\$\{?job\}?"), "todo-service"),
    (re.compile(r"\$\{?instance\}?"), ".*"),
    (re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?"), ".*"),
]


class Ref:
    """One selector found somewhere: metric name and label matchers (label, op, value)."""

    def __init__(self, where, name, matchers):
        self.where, self.name, self.matchers = where, name, matchers


def selectors(expr, where):
    """Every vector selector of a PromQL expression, as Refs."""
    try:
        ast = promql_parser.parse(expr)
    except Exception as e:  # the parser raises its own exception types
        raise CheckFailed(f"{where}: PromQL does not parse: {e}\n{expr}")
    out = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            ms = [(m.name, str(m.op).split(".")[-1], m.value) for m in node.matchers.matchers]
            for group in node.matchers.or_matchers or []:
                ms += [(m.name, str(m.op).split(".")[-1], m.value) for m in group]
            name = node.name or next((v for n, op, v in ms if n == "__name__" and op == "Equal"), None)
            out.append(Ref(where, name, [m for m in ms if m[0] != "__name__"]))
    promql_parser.walk(ast, visit)
    return out


def labels_ref(where, labels, name=None):
    return Ref(where, name, [(k, "Equal", str(v)) for k, v in (labels or {}).items()])


def grafana_expr(expr):
    for pattern, repl in GRAFANA_VARS:
        expr = pattern.sub(repl, expr)
    return expr


def dashboard_refs(dash, where):
    refs = []

    def panels(ps):
        for p in ps or []:
            yield p
            yield from panels(p.get("panels"))
    for p in panels(dash.get("panels")):
        for t in p.get("targets", []) or []:
            if t.get("expr"):
                refs += selectors(grafana_expr(t["expr"]), f"{where}: panel {p.get('title')!r}")
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        if v.get("type") != "query" or not q:
            continue
        m = re.match(r"\s*(label_values|query_result)\((.*)\)\s*$", q, re.S)
        if m and m.group(1) == "label_values":
            inner = m.group(2).rsplit(",", 1)[0] if "," in m.group(2) else m.group(2)
            refs += selectors(grafana_expr(inner), f"{where}: variable {v.get('name')}")
        elif m:
            refs += selectors(grafana_expr(m.group(2)), f"{where}: variable {v.get('name')}")
    return refs


def rule_groups_refs(groups, where, recorded):
    refs = []
    for g in groups or []:
        for r in g.get("rules", []):
            name = r.get("record") or r.get("alert")
            if "record" in r:
                recorded.setdefault(r["record"], {"exprs": [], "labels": {}})
                recorded[r["record"]]["exprs"].append(r["expr"])
                for k, v in (r.get("labels") or {}).items():
                    recorded[r["record"]]["labels"].setdefault(k, set()).add(str(v))
            refs += selectors(str(r["expr"]), f"{where}: {g.get('name')}/{name}")
    return refs


def test_refs(path):
    refs = []
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    for t in data.get("tests", []):
        where = f"{os.path.relpath(path, ROOT)}: test {t.get('name')!r}"
        for s in t.get("input_series", []):
            refs += selectors(s["series"], f"{where}: input series")
        for e in t.get("promql_expr_test", []) or []:
            refs += selectors(e["expr"], f"{where}: expr")
            for s in e.get("exp_samples", []) or []:
                if s.get("labels"):
                    refs += selectors(s["labels"], f"{where}: expected sample")
        for a in t.get("alert_rule_test", []) or []:
            for exp in a.get("exp_alerts", []) or []:
                refs.append(labels_ref(f"{where}: expected alert {a['alertname']}", exp.get("exp_labels")))
    return refs


def yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def k8s_refs(recorded):
    """PrometheusRules, the HPA's custom metrics (through prometheus-adapter), dashboard ConfigMaps."""
    refs = []
    adapter = []
    hpa_metrics = []
    files = sorted(glob.glob(os.path.join(ROOT, "k8s/**/*.yaml"), recursive=True))
    for path in files:
        rel = os.path.relpath(path, ROOT)
        if rel.startswith("k8s/schemas/"):
            continue
        for doc in yaml_docs(path):
            kind = doc.get("kind")
            if kind == "PrometheusRule":
                refs += rule_groups_refs(doc.get("spec", {}).get("groups"), rel, recorded)
            elif kind == "HorizontalPodAutoscaler":
                for m in doc.get("spec", {}).get("metrics", []):
                    if m["type"] == "Resource":
                        continue
                    spec = m[m["type"][0].lower() + m["type"][1:]]
                    hpa_metrics.append((rel, spec["metric"]["name"]))
            elif kind == "Application":
                values = doc.get("spec", {}).get("source", {}).get("helm", {}).get("valuesObject") or {}
                for rule in (values.get("rules") or {}).get("custom", []) or []:
                    adapter.append((rel, rule))
            elif kind == "ConfigMap":
                for key, text in (doc.get("data") or {}).items():
                    if key.endswith(".json"):
                        refs += dashboard_refs(json.loads(text), f"{rel}: {key}")
    for path in sorted(glob.glob(os.path.join(ROOT, "k8s/**/dashboards/*.json"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            refs += dashboard_refs(json.load(f), os.path.relpath(path, ROOT))
    sys.path.insert(0, os.path.dirname(__file__))
    import autoscaling  # noqa: E402  (scripts/ops/lib)
    for rel, metric in hpa_metrics:
        served = [(r_rel, r) for r_rel, r in adapter if autoscaling.rule_metric_name(r) == metric]
        if not served:
            refs.append(Ref(f"{rel}: HPA metric", metric, []))
        for r_rel, rule in served:
            refs += selectors(rule["seriesQuery"], f"{r_rel}: prometheus-adapter rule for HPA metric {metric}")
    return refs


def monitoring_refs(recorded, extra_rule_files=()):
    refs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "monitoring/prometheus/rules/*.yaml"))) + list(extra_rule_files):
        with open(path, encoding="utf-8") as f:
            refs += rule_groups_refs(yaml.safe_load(f)["groups"], os.path.relpath(path, ROOT), recorded)
    for path in sorted(glob.glob(os.path.join(ROOT, "monitoring/prometheus/tests/*.yaml"))):
        refs += test_refs(path)
    for path in sorted(glob.glob(os.path.join(ROOT, "monitoring/grafana/dashboards/*.json"))):
        with open(path, encoding="utf-8") as f:
            refs += dashboard_refs(json.load(f), os.path.relpath(path, ROOT))
    return refs


def source_families(name, recorded, contract, seen=None):
    """The service families a (possibly recorded) series is computed from."""
    if name in contract.samples:
        return {contract.samples[name]}
    if name not in recorded:
        return set()
    seen = seen or set()
    if name in seen:
        return set()
    seen.add(name)
    out = set()
    for expr in recorded[name]["exprs"]:
        for ref in selectors(expr, name):
            if ref.name:
                out |= source_families(ref.name, recorded, contract, seen)
    return out


def check_refs(refs, recorded, contract, scrape):
    """Errors: metrics not exported, label values the service never emits."""
    errors, names = [], set()
    service_labels = contract.label_names()
    for ref in refs:
        if ref.name:
            names.add(ref.name)
            if ref.name not in recorded and ref.name not in contract.builtins \
                    and ref.name not in scrape.sample_names:
                errors.append(f"{ref.where}: {ref.name} is not exported by the binary")
        fams = source_families(ref.name, recorded, contract) if ref.name else set(contract.families)
        rule_labels = recorded.get(ref.name, {}).get("labels", {}) if ref.name else {}
        for label, op, value in ref.matchers:
            if label in contract.target_labels and label != "le":
                continue
            if value == "" or "$" in value:
                continue
            if label == "le":
                hist = {f for f in fams if contract.families.get(f, {}).get("type") == "histogram"}
                bounds = set().union(*(scrape.buckets(f) for f in hist)) if hist else set()
                if ref.name and ref.name.endswith("_bucket") and op in ("Equal", "NotEqual"):
                    try:
                        ok = float(value) in bounds
                    except ValueError:
                        ok = False
                    if not ok:
                        errors.append(f"{ref.where}: le={value!r} on {ref.name} is not a bucket bound of "
                                      f"{', '.join(sorted(hist))} ({', '.join(_fmt(b) for b in sorted(bounds))})")
                continue
            if label in rule_labels:
                literals, patterns = rule_labels[label], []
            elif label in service_labels:
                literals, patterns = contract.values(fams, label) if fams else contract.values(contract.families, label)
                if not literals and not patterns:
                    errors.append(f"{ref.where}: {ref.name or 'series'} has no label {label} "
                                  f"(its families: {', '.join(sorted(fams)) or 'none'})")
                    continue
            else:
                if ref.name and (ref.name in contract.samples or fams):
                    errors.append(f"{ref.where}: {ref.name} filters on label {label}={value!r}, a label "
                                  "that neither the service nor a rule sets")
                continue
            if op in ("Equal", "NotEqual"):
                if not allowed(value, literals, patterns):
                    errors.append(f"{ref.where}: {ref.name or 'series'}{{{label}={value!r}}}: the service never "
                                  f"emits {label}={value!r} (it emits {_sample(literals, patterns)})")
            else:
                try:
                    rx = re.compile(value)
                except re.error as e:
                    errors.append(f"{ref.where}: {label}=~{value!r} is not a valid regex: {e}")
                    continue
                if not any(rx.fullmatch(v) for v in literals) and not patterns:
                    errors.append(f"{ref.where}: {ref.name or 'series'}{{{label}=~{value!r}}} matches no value "
                                  f"the service emits ({_sample(literals, patterns)})")
    return errors, names


def _fmt(b):
    return "+Inf" if b == float("inf") else f"{b:g}"


def _sample(literals, patterns):
    vals = sorted(literals)
    if len(vals) > 12:
        vals = vals[:3] + ["…"] + vals[-2:]
    return ", ".join(vals + [f"/{p.pattern}/" for p in patterns])


# --- running the binary ----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_open(hostport):
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def request(method, url, body=None, headers=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def psql(pg, sql, db="postgres"):
    return subprocess.run(["psql", f"{pg}/{db}", "-Atqc", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def tail(path, n=30):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


class Service:
    """The binary on free 127.0.0.1 ports with a database of its own (`name`_<pid>);
    `extra_env` is added to (and may override) its environment. scripts/ops/lib/traces_live.py
    runs it too."""

    def __init__(self, binary, pg, nats_url, tmp, name="metrics_contract", extra_env=None):
        self.binary, self.pg, self.nats_url, self.tmp = binary, pg, nats_url, tmp
        self.db = f"{name}_{os.getpid()}"
        self.prefix = f"mc{os.getpid()}"
        self.api = f"http://127.0.0.1:{free_port()}"
        self.admin = f"http://127.0.0.1:{free_port()}"
        self.log = os.path.join(tmp, f"serve-{name}.log")
        self.extra_env = dict(extra_env or {})
        self.proc = None

    def start(self):
        psql(self.pg, f'CREATE DATABASE "{self.db}"')
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DATABASE_URL": f"{self.pg}/{self.db}",
            "HTTP_ADDR": self.api.split("//")[1],
            "ADMIN_ADDR": self.admin.split("//")[1],
            "LOG_FORMAT": "json",
            "RUST_LOG": "warn",
            "SHUTDOWN_DELAY_S": "0",
            **self.extra_env,
        }
        if self.nats_url:
            env["NATS_URL"] = self.nats_url
            env["NATS_PREFIX"] = self.prefix
        self.out = open(self.log, "w")
        self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.tmp)
        say(f"started pid {self.proc.pid}: API {self.api}, admin {self.admin}, database {self.db}"
            + (f", NATS {self.nats_url} prefix {self.prefix}" if self.nats_url else ", no NATS"))
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"serve exited {self.proc.returncode} before /readyz answered 200:\n{tail(self.log)}")
            try:
                status, _, body = request("GET", f"{self.admin}/readyz", timeout=1)
            except (urllib.error.URLError, OSError):
                status, body = 0, ""
            if status == 200:
                say(f"ready: {body.strip()}")
                return
            time.sleep(0.2)
        raise CheckFailed(f"/readyz did not answer 200 within {READY_S}s:\n{tail(self.log)}")

    def scrape(self):
        status, _, body = request("GET", f"{self.admin}/metrics")
        if status != 200:
            raise CheckFailed(f"/metrics answered {status}")
        return Scrape(body)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=30)
                say(f"stopped pid {self.proc.pid} with SIGTERM (exit {rc})")
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                say(f"pid {self.proc.pid} still running 30 s after SIGTERM: killed")
        if self.proc:
            self.out.close()
        try:
            psql(self.pg, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        except subprocess.CalledProcessError as e:
            say(f"could not drop database {self.db}: {e.stderr.strip()}")
        if self.nats_url:
            try:
                asyncio.run(delete_streams(self.nats_url, self.prefix))
            except Exception as e:  # cleanup only: report, do not mask the result
                say(f"could not delete the JetStream streams of prefix {self.prefix}: {e}")


async def nats_traffic(url, prefix, todo_id):
    """A request/reply get (found and not found) and one JetStream command."""
    import nats  # nats-py, installed by scripts/ops/tools
    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False)
    try:
        owner = {"Todo-Owner": "public"}
        ok = await nc.request(f"{prefix}.get", json.dumps({"id": todo_id}).encode(), timeout=5, headers=owner)
        missing = await nc.request(f"{prefix}.get", json.dumps({"id": str(uuid.uuid4())}).encode(),
                                   timeout=5, headers=owner)
        js = nc.jetstream()
        ack = await js.publish(f"{prefix}.cmd.create", json.dumps({"title": "from a NATS command"}).encode(),
                               headers={**owner, "Nats-Msg-Id": str(uuid.uuid4())}, timeout=5)
        return (ok.headers or {}).get("Nats-Service-Error-Code", "ok"), \
            (missing.headers or {}).get("Nats-Service-Error-Code", "ok"), ack.stream
    finally:
        await nc.close()


async def delete_streams(url, prefix):
    import nats
    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False)
    try:
        js = nc.jetstream()
        stem = re.sub(r"[^A-Za-z0-9]", "_", prefix).upper()
        for suffix in ("COMMANDS", "EVENTS", "DLQ"):
            try:
                await js.delete_stream(f"{stem}_{suffix}")
            except Exception:  # absent: nothing to clean
                pass
    finally:
        await nc.close()


def open_feed(api):
    """A change-feed GET whose headers have arrived; the caller closes it."""
    host, port = api.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=3)
    conn.request("GET", "/api/todos/events", headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    return conn, resp


def wait_until(svc, what, pred, seconds=10):
    deadline = time.monotonic() + seconds
    while True:
        scrape = svc.scrape()
        if pred(scrape):
            return scrape
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not seen on /metrics within {seconds}s")
        time.sleep(0.25)


def drive(svc, expect):
    """The traffic; `expect` collects (description, ok) pairs checked on the scrapes."""
    api = svc.api
    codes = {}

    def call(label, method, path, body=None, headers=None, want=None):
        status, hdrs, text = request(method, f"{api}{path}", body, headers)
        codes[label] = status
        if want is not None and status != want:
            raise CheckFailed(f"{method} {path} ({label}) answered {status}, expected {want}: {text[:200]}")
        return status, hdrs, text

    call("health", "GET", "/health", want=200)
    call("openapi", "GET", "/openapi.json", want=200)
    ids = []
    for i in range(3):
        _, _, text = call("create", "POST", "/api/todos", {"title": f"metrics contract {i}"}, want=201)
        ids.append(json.loads(text)["id"])
    call("get", "GET", f"/api/todos/{ids[0]}", want=200)
    call("get again (cache)", "GET", f"/api/todos/{ids[0]}", want=200)
    call("404", "GET", f"/api/todos/{uuid.uuid4()}", want=404)
    call("412", "PATCH", f"/api/todos/{ids[1]}", {"completed": True}, {"If-Match": '"999"'}, want=412)
    call("patch", "PATCH", f"/api/todos/{ids[1]}", {"completed": True}, {"If-Match": '"1"'}, want=200)
    call("list", "GET", "/api/todos", want=200)
    call("unmatched", "GET", "/no/such/path", want=404)
    call("delete", "DELETE", f"/api/todos/{ids[2]}", want=204)
    say("HTTP: " + ", ".join(f"{k} {v}" for k, v in codes.items()))

    # The change feed, held open while /metrics is scraped.
    conn, resp = open_feed(api)
    try:
        if resp.status != 200:
            raise CheckFailed(f"GET /api/todos/events answered {resp.status}")
        during = wait_until(svc, "todo_feed_streams >= 1 while a feed is open",
                            lambda s: (s.value("todo_feed_streams") or 0) >= 1)
        expect.append(("todo_feed_streams >= 1 while a change feed is open", True))
        expect.append(("todo_http_connections{listener=\"api\"} >= 1 while a change feed is open",
                       (during.value("todo_http_connections", listener="api") or 0) >= 1))
        say(f"feed open: todo_feed_streams {during.value('todo_feed_streams'):g}, "
            f"todo_http_connections{{listener=\"api\"}} {during.value('todo_http_connections', listener='api'):g}, "
            f"http_in_flight_requests {during.value('http_in_flight_requests'):g}")
    finally:
        conn.close()
    wait_until(svc, "todo_feed_streams back to 0 after the feed closed",
               lambda s: (s.value("todo_feed_streams") or 0) == 0)
    expect.append(("todo_feed_streams back to 0 once the feed is closed", True))

    if svc.nats_url:
        got, missing, stream = asyncio.run(nats_traffic(svc.nats_url, svc.prefix, ids[0]))
        say(f"NATS: {svc.prefix}.get found -> {got}, unknown id -> {missing}; command stored in {stream}")
        if got != "ok" or missing != "404":
            raise CheckFailed(f"NATS get answered {got} / {missing}, expected ok / 404")
        wait_until(svc, "todo_nats_messages_total{edge=\"command\",outcome=\"ok\"} >= 1",
                   lambda s: (s.value("todo_nats_messages_total", edge="command", outcome="ok") or 0) >= 1)
        wait_until(svc, "todo_nats_messages_total{edge=\"event\",outcome=\"ok\"} >= 1 (outbox relay)",
                   lambda s: (s.value("todo_nats_messages_total", edge="event", outcome="ok") or 0) >= 1)
    return ids


def really_set(scrape, svc, expect):
    """The gauges and counters the traffic must have moved."""
    v = scrape.value
    checks = [
        ("todo_db_up == 1", v("todo_db_up") == 1),
        ("todo_build_info == 1", v("todo_build_info") == 1),
        ("todo_db_pool_connections{state=\"max\"} > 0", (v("todo_db_pool_connections", state="max") or 0) > 0),
        ("every todo_actor_up == 1",
         all(val == 1 for n, _, val in scrape.samples if n == "todo_actor_up") and v("todo_actor_up") is not None),
        ("todo_http_connections{listener=\"admin\"} >= 1 (this scrape)",
         (v("todo_http_connections", listener="admin") or 0) >= 1),
        ("http_requests_total{route=\"/api/todos/:id\",status_code=\"404\"} >= 1",
         (v("http_requests_total", route="/api/todos/:id", status_code="404") or 0) >= 1),
        ("http_requests_total{route=\"/api/todos/:id\",status_code=\"412\"} >= 1",
         (v("http_requests_total", route="/api/todos/:id", status_code="412") or 0) >= 1),
        ("http_requests_total{route=\"unmatched\"} >= 1", (v("http_requests_total", route="unmatched") or 0) >= 1),
        ("http_requests_total{route=\"/api/todos/events\"} >= 1",
         (v("http_requests_total", route="/api/todos/events") or 0) >= 1),
        ("http_request_duration_seconds_count{route=\"/api/todos\",method=\"POST\"} >= 3",
         (v("http_request_duration_seconds_count", route="/api/todos", method="POST") or 0) >= 3),
        ("todo_write_commands_total{op=\"create\",outcome=\"ok\"} >= 3",
         (v("todo_write_commands_total", op="create", outcome="ok") or 0) >= 3),
        ("todo_write_batch_size_count >= 1", (v("todo_write_batch_size_count") or 0) >= 1),
        ("todo_query_reads_total >= 1", (v("todo_query_reads_total") or 0) >= 1),
        ("todo_actor_messages_total{actor=\"writer\"} >= 1", (v("todo_actor_messages_total", actor="writer") or 0) >= 1),
        ("http_in_flight_requests == 0 once every request is answered", v("http_in_flight_requests") == 0),
    ]
    if svc.nats_url:
        checks += [
            ("todo_nats_connected == 1", v("todo_nats_connected") == 1),
            ("todo_actor_up{actor=\"nats-requests\"} == 1", v("todo_actor_up", actor="nats-requests") == 1),
            ("todo_nats_messages_total{edge=\"request\",outcome=\"ok\"} >= 1",
             (v("todo_nats_messages_total", edge="request", outcome="ok") or 0) >= 1),
        ]
    return expect + checks


# --- main ---------------------------------------------------------------------------------------

WRONG_RULES = """groups:
  - name: metrics-contract-self-test
    rules:
      - record: selftest:wrong_name
        expr: sum(rate(todo_write_comands_total[5m]))
      - record: selftest:wrong_value
        expr: sum(rate(todo_nats_messages_total{edge="command",outcome="deadletter"}[5m]))
"""


def self_test(contract, scrape, tmp):
    path = os.path.join(tmp, "wrong.yaml")
    with open(path, "w") as f:
        f.write(WRONG_RULES)
    recorded = {}
    refs = rule_groups_refs(yaml.safe_load(WRONG_RULES)["groups"], "self-test", recorded)
    errors, _ = check_refs(refs, recorded, contract, scrape)
    name_caught = any("todo_write_comands_total is not exported" in e for e in errors)
    value_caught = any("outcome='deadletter'" in e for e in errors)
    for e in errors:
        say(f"self-test caught: {e}")
    if not (name_caught and value_caught and len(errors) == 2):
        raise CheckFailed(f"self-test: the deliberately wrong name and label value were not both reported "
                          f"(exactly): {errors}")


def main():
    binary = os.environ["TODO_SERVICE_BIN"]
    pg = os.environ["PG_SERVER_URL"].rstrip("/")
    nats_url = os.environ.get("NATS_URL", "")
    if nats_url and not tcp_open(nats_url.split("://", 1)[-1].split("@")[-1]):
        raise CheckFailed(f"NATS_URL={nats_url} does not answer")
    contract = Contract()
    say(f"contract: {len(contract.families)} families + {len(contract.process)} process families "
        f"(monitoring/metrics-contract.yaml)")

    recorded = {}
    refs = monitoring_refs(recorded) + k8s_refs(recorded)
    say(f"references: {len(refs)} selectors in monitoring/ and k8s/, {len(recorded)} recording rules")

    tmp = tempfile.mkdtemp(prefix="check-metrics-contract-")
    svc = Service(binary, pg, nats_url, tmp)
    errors = []
    try:
        svc.start()
        at_start = svc.scrape()
        errors += check_scrape(at_start, contract, "at start")
        say(f"at start: {len(at_start.types)} families, {len(at_start.samples)} samples")
        expect = []
        drive(svc, expect)
        after = svc.scrape()
        errors += check_scrape(after, contract, "after traffic")
        for what, ok in really_set(after, svc, expect):
            say(f"{'ok  ' if ok else 'FAIL'} {what}")
            if not ok:
                errors.append(f"not really set: {what}")
        ref_errors, names = check_refs(refs, recorded, contract, after)
        errors += ref_errors
        used = sorted(n for n in names if n in contract.samples)
        say(f"{len(used)} exported series names are referenced: {', '.join(used)}")
        unreferenced = sorted(set(contract.families) - {contract.samples[n] for n in used})
        if unreferenced:
            say(f"exported but not read by any rule, dashboard or HPA: {', '.join(unreferenced)}")
        self_test(contract, after, tmp)
        say("self-test: a wrong metric name and a wrong label value are both reported")
    finally:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if errors:
        for e in errors:
            print(f"FAIL: {e}", flush=True)
        raise CheckFailed(f"{len(errors)} contract violation(s)")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        sys.exit(f"check-metrics-contract: {e}")
