"""The log pipelines of logging/ and k8s/, checked offline (scripts/ops/check-logging).

Logstash (compose): every logging/logstash/pipeline/*.conf is parsed by
logstash-pipeline-parser, a PEG port of Logstash's own pipeline grammar (grammar.treetop):
a syntax error fails here as it would in Logstash. This is Logstash's *grammar*, not
Logstash: whether each plugin accepts its options is not checked (no Logstash is
installable here); the plugins used must be ones the logstash image bundles. A broken
copy of the pipeline must be rejected (self-test).

Fluent Bit (Kubernetes): the configuration of k8s/cluster-addons' fluent-bit Application,
as each environment renders it, is parsed with tree-sitter-fluentbit (a grammar of Fluent
Bit's classic configuration format), then checked for what Fluent Bit itself would refuse
or silently drop: known sections and plugins, Name/Match/Tag, parsers that exist,
environment variables that the DaemonSet sets, a Match that selects the input's Tag, tail
paths that match the service's containers (and not NATS'), and the `todo_json` parser run
on the log lines of logging/LOG_FIELDS.md: each must become a record with the service's
timestamp as its time and the documented fields at the top level.
"""

import fnmatch
import glob
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone

import yaml

ROOT = os.environ.get("ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../../.."))
errors = []


def fail(msg):
    errors.append(msg)
    print(f"   FAIL: {msg}", flush=True)


def ok(msg):
    print(f"   ok: {msg}", flush=True)


# --- Logstash ---------------------------------------------------------------------------------

# Plugins of the default logstash image (docker.elastic.co/logstash/logstash, 8.x) that the
# pipeline may use; anything else would need `logstash-plugin install` in the image.
LOGSTASH_PLUGINS = {
    "input": {"gelf", "beats", "tcp", "udp", "http", "file", "stdin"},
    "filter": {"mutate", "json", "date", "grok", "drop", "if", "else", "else if", "ruby", "kv", "dissect"},
    "output": {"elasticsearch", "stdout", "file", "if", "else", "else if"},
}


def logstash():
    from logstash_pipeline_parser import Pipeline

    files = sorted(glob.glob(os.path.join(ROOT, "logging/logstash/pipeline/*.conf")))
    if not files:
        fail("no Logstash pipeline in logging/logstash/pipeline")
    for path in files:
        rel = os.path.relpath(path, ROOT)
        text = open(path, encoding="utf-8").read()
        try:
            ast = Pipeline(text).parse()
        except Exception as e:  # the parser raises pyparsing's exceptions
            fail(f"{rel}: not valid Logstash pipeline syntax: {str(e).strip()[:300]}")
            continue
        sections = {sec[0]: [p[0] for p in sec[1]] for sec in ast}
        for section in ("input", "filter", "output"):
            if section not in sections:
                fail(f"{rel}: no {section} section")
        for section, plugins in sections.items():
            unknown = [p for p in plugins if p not in LOGSTASH_PLUGINS.get(section, set())]
            if unknown:
                fail(f"{rel}: {section} plugins {unknown} are not bundled with the logstash image")
        summary = "; ".join(f"{k}: {', '.join(v)}" for k, v in sections.items())
        ok(f"{rel}: parses with Logstash's pipeline grammar ({summary})")
        # Self-test: the parser must reject a broken pipeline.
        broken = text.replace("filter {", "filter {\n  mutate { add_tag => [\"x\"] \n", 1)
        try:
            Pipeline(broken).parse()
            fail(f"{rel}: self-test: a copy with an unclosed block was accepted: the grammar check is not working")
        except Exception:
            ok(f"{rel}: self-test: a copy with an unclosed block is rejected")
    print("   note: this is Logstash's grammar, not `logstash --config.test_and_exit` (plugin options are not "
          "validated; Logstash is not installable here)", flush=True)


# --- Fluent Bit --------------------------------------------------------------------------------

FB_SECTIONS = {"SERVICE", "INPUT", "FILTER", "OUTPUT", "PARSER", "MULTILINE_PARSER"}
FB_PLUGINS = {
    "INPUT": {"tail", "systemd"},
    "FILTER": {"kubernetes", "parser", "modify", "nest", "grep", "record_modifier", "lua"},
    "OUTPUT": {"cloudwatch_logs", "stdout", "null"},
}
FB_BUILTIN_PARSERS = {"docker", "cri", "json", "syslog-rfc5424", "syslog-rfc3164"}
FB_BUILTIN_MULTILINE = {"docker", "cri", "go", "python", "java"}


def render(target):
    out = subprocess.run(["kubectl", "kustomize", target], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def parse_fb(text, where, report=True):
    """[(section, {key: [values]})] of a classic config once tree-sitter accepts it; None if not."""
    import tree_sitter as ts
    import tree_sitter_fluentbit as tsf

    parser = ts.Parser(ts.Language(tsf.language()))
    tree = parser.parse(text.encode())
    if tree.root_node.has_error:
        bad = next((n for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing), tree.root_node)
        if report:
            fail(f"{where}: not valid Fluent Bit classic configuration near line {bad.start_point[0] + 1}: "
                 f"{text.splitlines()[bad.start_point[0]][:120]!r}")
        return None
    sections = []
    for sec in tree.root_node.children:
        if sec.type != "section":
            continue
        name = sec.child_by_field_name("header").text.decode().strip().strip("[]").strip().upper()
        entries = {}
        body = sec.child_by_field_name("body")
        for entry in (body.children if body else []):
            if entry.type == "entry":
                key = entry.child_by_field_name("key").text.decode()
                value = entry.child_by_field_name("value").text.decode().strip()
                entries.setdefault(key.lower(), []).append(value)
        sections.append((name, entries))
    return sections


def _walk(node):
    yield node
    for c in node.children:
        yield from _walk(c)


def fb_time(value, fmt):
    """Fluent Bit's strptime with %L (fractional seconds), in Python."""
    frac = re.search(r"\.(\d+)", value)
    py_fmt = fmt.replace("%L", "%f")
    if frac:
        value = value.replace(frac.group(0), "." + (frac.group(1) + "000000")[:6], 1)
    return datetime.strptime(value, py_fmt).replace(tzinfo=timezone.utc)


def fluent_bit_env(env):
    docs = render(f"k8s/cluster-addons/overlays/{env}")
    app = next(d for d in docs if d["kind"] == "Application" and d["metadata"]["name"] == "fluent-bit")
    values = app["spec"]["source"]["helm"]["valuesObject"]
    config = values["config"]
    # The chart renders the strings through `tpl`: fill the values they use.
    tpl = {"flush": 1, "logLevel": values.get("logLevel", "info"), "metricsPort": 2020}
    fill = lambda s: re.sub(r"\{\{\s*\.Values\.(\w+)\s*\}\}", lambda m: str(tpl[m.group(1)]), s)
    env_vars = {e["name"]: e.get("value") for e in values.get("env", [])}
    where = f"k8s/cluster-addons/overlays/{env}: fluent-bit"
    parsed = {}
    for key in ("service", "inputs", "filters", "outputs", "customParsers"):
        if key not in config:
            fail(f"{where}: config.{key} missing")
            continue
        parsed[key] = parse_fb(fill(config[key]), f"{where} config.{key}") or []
    sections = [s for v in parsed.values() for s in v]
    if not sections:
        return
    ok(f"{where}: {len(sections)} sections parse as Fluent Bit classic configuration")
    parsers = {e["name"][0]: e for s, e in sections if s == "PARSER" and "name" in e}
    tags = []
    for sec, e in sections:
        if sec not in FB_SECTIONS:
            fail(f"{where}: unknown section [{sec}]")
            continue
        name = (e.get("name") or [""])[0]
        if sec in FB_PLUGINS:
            if name not in FB_PLUGINS[sec]:
                fail(f"{where}: [{sec}] Name {name!r} is not a plugin this check knows for {sec}")
            if sec == "INPUT":
                if "tag" not in e:
                    fail(f"{where}: [INPUT] {name} has no Tag")
                tags += e.get("tag", [])
            elif "match" not in e:
                fail(f"{where}: [{sec}] {name} has no Match (it would receive nothing)")
        for p in e.get("parser", []) + e.get("merge_parser", []):
            if p not in parsers and p not in FB_BUILTIN_PARSERS:
                fail(f"{where}: [{sec}] {name} uses parser {p!r}, defined nowhere")
        for ml in e.get("multiline.parser", []):
            for p in (x.strip() for x in ml.split(",")):
                if p not in FB_BUILTIN_MULTILINE:
                    fail(f"{where}: multiline.parser {p!r} is not a built-in one")
        for values_ in e.values():
            for v in values_:
                for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", v):
                    if var not in env_vars:
                        fail(f"{where}: [{sec}] {name} reads ${{{var}}}, which the DaemonSet's env does not set")
                    elif not env_vars[var] or "SET-IN-OVERLAY" in str(env_vars[var]):
                        fail(f"{where}: ${{{var}}} is {env_vars[var]!r} in this environment")
    # Every filter and output selects what the inputs tag.
    for sec, e in sections:
        for m in e.get("match", []):
            sample = [t.replace("*", "var.log.containers.x.log") for t in tags]
            if not any(fnmatch.fnmatch(t, m) for t in sample):
                fail(f"{where}: [{sec}] {(e.get('name') or ['?'])[0]} Match {m!r} selects no input Tag {tags}")
    # The tail paths match the service's containers, not NATS' or another namespace's.
    paths = [p for sec, e in sections if sec == "INPUT" and e.get("name") == ["tail"] for v in e.get("path", [])
             for p in v.split(",")]
    base = render(f"k8s/overlays/{env}")
    names = []
    for d in base:
        if d["kind"] in ("Deployment", "Job", "StatefulSet"):
            pod = d["spec"]["template"]["spec"]
            prefix = {"Deployment": f"{d['metadata']['name']}-5d8f7c9b6d-x7k2p",
                      "Job": f"{d['metadata']['name']}-q4w9z",
                      "StatefulSet": f"{d['metadata']['name']}-0"}[d["kind"]]
            for c in pod.get("containers", []):
                names.append((d["kind"], d["metadata"]["name"], c["name"],
                              f"/var/log/containers/{prefix}_{d['metadata']['namespace']}_{c['name']}-{'a' * 64}.log"))
    wrong = 0
    for kind, owner, container, path in names:
        shipped = any(fnmatch.fnmatch(path, p) for p in paths)
        want = owner in ("todo-service", "todo-service-migrate")
        if shipped != want:
            wrong += 1
            fail(f"{where}: {kind} {owner} container {container}: tail {'ships' if shipped else 'misses'} its log "
                 f"({os.path.basename(path)})")
    if not wrong:
        ok(f"{where}: tail ships the logs of {sorted({o + '/' + c for k, o, c, _ in names if o.startswith('todo-service')})}, "
       f"not {sorted({o for k, o, c, _ in names if not o.startswith('todo-service')})}")
    # The parser on the service's own lines (logging/LOG_FIELDS.md).
    todo = parsers.get("todo_json")
    parser_filters = [e for sec, e in sections if sec == "FILTER" and e.get("name") == ["parser"]]
    if not todo:
        fail(f"{where}: no [PARSER] todo_json")
        return
    if not any(e.get("parser") == ["todo_json"] and e.get("key_name") == ["log"] for e in parser_filters):
        fail(f"{where}: no parser filter applies todo_json to the `log` key")
    if todo.get("format") != ["json"]:
        fail(f"{where}: todo_json must be Format json")
    time_key, time_fmt = todo.get("time_key", [None])[0], todo.get("time_format", [None])[0]
    doc = open(os.path.join(ROOT, "logging/LOG_FIELDS.md"), encoding="utf-8").read()
    lines = re.findall(r"^\{.*\}$", doc, re.M)
    if not lines:
        fail("logging/LOG_FIELDS.md has no example lines to parse")
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", doc, re.M))
    for line in lines:
        record = json.loads(line)
        if not isinstance(record, dict) or any(isinstance(v, dict) for v in record.values()):
            fail(f"LOG_FIELDS.md example is not a flat JSON object: {line[:80]}")
            continue
        if time_key not in record:
            fail(f"{where}: todo_json's Time_Key {time_key!r} is not in the line {line[:80]}")
            continue
        try:
            fb_time(record[time_key], time_fmt)
        except ValueError as e:
            fail(f"{where}: todo_json's Time_Format {time_fmt!r} does not read {record[time_key]!r}: {e}")
            continue
        undocumented = set(record) - documented
        if undocumented and "listening" not in record.get("message", ""):
            fail(f"LOG_FIELDS.md example uses undocumented fields {sorted(undocumented)}")
    if todo.get("time_keep") != ["On"]:
        fail(f"{where}: todo_json must keep `timestamp` (Time_Keep On): LOG_FIELDS.md queries name it")
    ok(f"{where}: todo_json reads the {len(lines)} example lines of LOG_FIELDS.md (time from `{time_key}`, "
       f"format {time_fmt}; fields stay top-level)")


def main():
    print("== Logstash pipeline (compose)", flush=True)
    logstash()
    envs = sorted(os.path.basename(p.rstrip("/")) for p in glob.glob(os.path.join(ROOT, "k8s/cluster-addons/overlays/*/")))
    for env in envs:
        print(f"\n== Fluent Bit ({env})", flush=True)
        fluent_bit_env(env)
    # Self-test of the Fluent Bit grammar check.
    if parse_fb("[INPUT\n    Name tail\n", "self-test", report=False) is None:
        ok("self-test: a broken Fluent Bit section header is rejected")
    else:
        fail("self-test: tree-sitter-fluentbit accepted a broken section header")
    if errors:
        sys.exit(f"check-logging: {len(errors)} problem(s)")


if __name__ == "__main__":
    main()
