"""The trace seams: where the service sends its spans, and whether a collector takes them there.

The binary exports over OTLP/HTTP only (OTEL_EXPORTER_OTLP_PROTOCOL http/protobuf, the
default, or http/json; grpc makes it refuse to start). OTEL_EXPORTER_OTLP_ENDPOINT is a
base URL to which it appends /v1/traces; OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, when set, is
the full URL and wins. A URL that names a collector's gRPC port (4317) fails on every
export while the service keeps running: nothing but traces missing in the backend says so.
So this module proves, offline, for docker-compose.yml and for k8s/base and every overlay
as rendered:

  - the protocol, when set, is http/protobuf or http/json; the sampler and its argument
    are ones the SDK knows;
  - the endpoint's host is the collector (the compose service; the Kubernetes Service
    otel-collector in its namespace, as the chart names it from the Application's values)
    and its port is the port of an OTLP receiver's *http* protocol that a traces pipeline
    of that collector's configuration uses (compose/otel-collector/config.yaml; the
    Application's values merged over the chart's defaults) and that is reachable from
    another container or pod (not bound to localhost; in Kubernetes the Service port
    targets that container port);
  - Kubernetes only: the service's egress NetworkPolicy lets its pods out to the
    collector's pods on that port, the collector's own NetworkPolicy lets them in, and
    the pods' security group (terraform/modules/security-groups) opens the port.

check_collector_config() checks a collector configuration's structure (the collector binary
itself is not installable here: see NOT CHECKED in the check scripts): only known sections
and component types, every component a pipeline or the service names is defined, the
otlp receiver's protocols, memory_limiter first, batch present, resource attributes and
the awsxray exporter's keys and region.
"""

import re
from urllib.parse import urlsplit

import chart_values
import manifests

HTTP_PROTOCOLS = ("http/protobuf", "http/json")
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")
ENV_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")

# Component types this check knows the keys of, or knows to exist in the contrib image.
# A type outside these fails: add it here once you know the image has it.
KNOWN = {
    "receivers": {"otlp", "jaeger", "zipkin", "prometheus"},
    "processors": {"memory_limiter", "batch", "resource"},
    "exporters": {"otlp", "otlphttp", "debug", "awsxray"},
    "extensions": {"health_check"},
}
SECTIONS = {"receivers", "processors", "exporters", "extensions", "connectors", "service"}
PIPELINE_TYPES = {"traces", "metrics", "logs"}
OTLP_PROTOCOL_KEYS = {"grpc", "http"}
BATCH_KEYS = {"timeout", "send_batch_size", "send_batch_max_size", "metadata_keys",
              "metadata_cardinality_limit"}
MEMORY_LIMITER_KEYS = {"check_interval", "limit_mib", "spike_limit_mib", "limit_percentage",
                       "spike_limit_percentage"}
RESOURCE_ACTIONS = {"insert", "update", "upsert", "delete", "hash", "extract", "convert"}
AWSXRAY_KEYS = {"region", "endpoint", "resource_arn", "role_arn", "external_id", "indexed_attributes",
                "index_all_attributes", "aws_log_groups", "telemetry", "local_mode",
                "no_verify_ssl", "proxy_address", "num_workers", "request_timeout_seconds",
                "max_retries", "middleware"}
# What the chart default (a value the key index does not hold) stands for below.
CHART_DEFAULT = "<chart default>"


def _type(name):
    return name.split("/", 1)[0]


def host_port(endpoint):
    """(host, port) of a receiver endpoint "host:port" (host may be ${env:MY_POD_IP} or empty)."""
    m = re.fullmatch(r"(.*):(\d+)", str(endpoint or ""))
    return (m.group(1), int(m.group(2))) if m else (None, None)


def check_collector_config(cfg, where):
    """Structural errors of an OpenTelemetry Collector configuration (a dict)."""
    errors = []
    if not isinstance(cfg, dict):
        return [f"{where}: not a mapping"]
    for section in sorted(set(cfg) - SECTIONS):
        errors.append(f"{where}: unknown top-level section `{section}`")
    for section, known in KNOWN.items():
        for name, body in (cfg.get(section) or {}).items():
            if _type(name) not in known:
                errors.append(f"{where}: {section} `{name}`: type {_type(name)} is unknown to this check "
                              f"(scripts/ops/lib/trace_seams.py KNOWN; add it once the image is known to have it)")
            if body is not None and body != CHART_DEFAULT and not isinstance(body, dict):
                errors.append(f"{where}: {section} `{name}` must be a mapping")
    service = cfg.get("service") or {}
    if not isinstance(service.get("extensions") or [], list):
        errors.append(f"{where}: service.extensions must be a list spelt out in full (a chart default "
                      f"list is not known to this check)")
        service = dict(service, extensions=[])
    for ext in service.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            errors.append(f"{where}: service.extensions names `{ext}`, which extensions does not define")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        errors.append(f"{where}: no pipelines")
    for pname, pipe in pipelines.items():
        if _type(pname) not in PIPELINE_TYPES:
            errors.append(f"{where}: pipeline `{pname}`: type must be one of {sorted(PIPELINE_TYPES)}")
        if not isinstance(pipe, dict):
            errors.append(f"{where}: pipeline `{pname}` is not a mapping")
            continue
        if any(v == CHART_DEFAULT for v in pipe.values()):
            errors.append(f"{where}: pipeline `{pname}` keeps the chart's default lists, which this check "
                          f"cannot see: spell it out, or remove it with null")
            continue
        for kind in ("receivers", "exporters"):
            if not pipe.get(kind):
                errors.append(f"{where}: pipeline `{pname}` has no {kind}")
        for kind in ("receivers", "processors", "exporters"):
            for comp in pipe.get(kind) or []:
                if comp not in (cfg.get(kind) or {}) and comp not in (cfg.get("connectors") or {}):
                    errors.append(f"{where}: pipeline `{pname}` names {kind[:-1]} `{comp}`, which is not defined")
        procs = pipe.get("processors") or []
        if "memory_limiter" in (cfg.get("processors") or {}) and procs and _type(procs[0]) != "memory_limiter":
            errors.append(f"{where}: pipeline `{pname}`: memory_limiter must be the first processor "
                          f"(it refuses data before anything else holds it), not {procs[0]}")
        if not any(_type(p) == "batch" for p in procs):
            errors.append(f"{where}: pipeline `{pname}` has no batch processor")
    errors += _check_components(cfg, where)
    return errors


def _check_components(cfg, where):
    errors = []
    for name, body in (cfg.get("receivers") or {}).items():
        if _type(name) != "otlp" or not isinstance(body, dict):
            continue
        protocols = body.get("protocols")
        if not isinstance(protocols, dict) or not protocols:
            errors.append(f"{where}: receiver {name}: protocols must name grpc and/or http")
            continue
        for proto in sorted(set(protocols) - OTLP_PROTOCOL_KEYS):
            errors.append(f"{where}: receiver {name}: unknown protocol `{proto}` (grpc or http)")
        for proto, spec in protocols.items():
            if isinstance(spec, dict) and "endpoint" in spec and spec["endpoint"] != CHART_DEFAULT:
                if host_port(spec["endpoint"])[1] is None:
                    errors.append(f"{where}: receiver {name}: {proto} endpoint {spec['endpoint']!r} is not host:port")
    for name, body in (cfg.get("processors") or {}).items():
        if not isinstance(body, dict):
            continue
        kind = _type(name)
        if kind == "batch":
            for key in sorted(set(body) - BATCH_KEYS):
                errors.append(f"{where}: processor {name}: unknown key `{key}`")
            size, most = body.get("send_batch_size"), body.get("send_batch_max_size")
            if isinstance(size, int) and isinstance(most, int) and most and most < size:
                errors.append(f"{where}: processor {name}: send_batch_max_size {most} < send_batch_size {size}")
        elif kind == "memory_limiter":
            for key in sorted(set(body) - MEMORY_LIMITER_KEYS):
                errors.append(f"{where}: processor {name}: unknown key `{key}`")
            if "check_interval" not in body:
                errors.append(f"{where}: processor {name}: check_interval is required")
            if not ({"limit_mib", "limit_percentage"} & set(body)):
                errors.append(f"{where}: processor {name}: needs limit_mib or limit_percentage")
            if {"limit_mib", "limit_percentage"} <= set(body):
                errors.append(f"{where}: processor {name}: limit_mib and limit_percentage both set (one only)")
        elif kind == "resource":
            attrs = body.get("attributes")
            if not isinstance(attrs, list) or not attrs:
                errors.append(f"{where}: processor {name}: attributes must be a non-empty list")
                continue
            for i, a in enumerate(attrs):
                if not isinstance(a, dict) or not a.get("key") or a.get("action") not in RESOURCE_ACTIONS:
                    errors.append(f"{where}: processor {name}: attributes[{i}] needs a key and an action "
                                  f"of {sorted(RESOURCE_ACTIONS)}")
                elif a["action"] in ("insert", "update", "upsert") and not ({"value", "from_attribute"} & set(a)):
                    errors.append(f"{where}: processor {name}: attributes[{i}] ({a['key']}) {a['action']} needs a value")
    for name, body in (cfg.get("exporters") or {}).items():
        if _type(name) == "awsxray" and isinstance(body, dict):
            for key in sorted(set(body) - AWSXRAY_KEYS):
                errors.append(f"{where}: exporter {name}: unknown key `{key}`")
            if not body.get("region"):
                errors.append(f"{where}: exporter {name}: region must be set (the cluster's region)")
            if not isinstance(body.get("indexed_attributes", []), list):
                errors.append(f"{where}: exporter {name}: indexed_attributes must be a list")
        if _type(name) in ("otlp", "otlphttp") and isinstance(body, dict) and not body.get("endpoint"):
            errors.append(f"{where}: exporter {name}: endpoint must be set")
    return errors


def otlp_http_ports(cfg):
    """{port: (receiver, host)} of the OTLP receivers' http protocol that a traces pipeline uses."""
    used = set()
    for pname, pipe in ((cfg.get("service") or {}).get("pipelines") or {}).items():
        if _type(pname) == "traces" and isinstance(pipe, dict):
            used |= set(pipe.get("receivers") or [])
    ports = {}
    for name, body in (cfg.get("receivers") or {}).items():
        if name not in used or _type(name) != "otlp" or not isinstance(body, dict):
            continue
        http = (body.get("protocols") or {}).get("http")
        if not isinstance(http, dict) or http.get("endpoint") in (None, CHART_DEFAULT):
            # An http protocol without an endpoint listens on localhost:4318 (collector
            # >= 0.104): not reachable from another container, so it does not count.
            continue
        host, port = host_port(http["endpoint"])
        if port is not None:
            ports[port] = (name, host, http.get("traces_url_path", "/v1/traces"))
    return ports


def check_env(env, where):
    """Errors in the service's OTEL_* settings themselves (protocol, sampler, URL form)."""
    errors = []
    for var in PROTOCOL_VARS:
        if var in env and env[var] not in HTTP_PROTOCOLS:
            errors.append(f"{where}: {var}={env[var]!r}: the binary speaks OTLP over HTTP only "
                          f"({' or '.join(HTTP_PROTOCOLS)}; grpc makes it refuse to start)")
    sampler = env.get("OTEL_TRACES_SAMPLER")
    if sampler is not None and sampler not in SAMPLERS:
        errors.append(f"{where}: OTEL_TRACES_SAMPLER={sampler!r} is not one of {', '.join(SAMPLERS)}")
    if "OTEL_TRACES_SAMPLER_ARG" in env:
        arg = env["OTEL_TRACES_SAMPLER_ARG"]
        try:
            ok = 0.0 <= float(arg) <= 1.0
        except ValueError:
            ok = False
        if not ok:
            errors.append(f"{where}: OTEL_TRACES_SAMPLER_ARG={arg!r} must be a ratio between 0 and 1")
        if not (sampler or "").endswith("traceidratio"):
            errors.append(f"{where}: OTEL_TRACES_SAMPLER_ARG is set but OTEL_TRACES_SAMPLER={sampler!r} "
                          f"takes no ratio (parentbased_traceidratio does)")
    for var in ENV_VARS:
        url = env.get(var)
        if not url:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(f"{where}: {var}={url!r} is not an http(s) URL")
    return errors


def export_target(env):
    """(var, host, port, path) of where the binary sends spans, or None when it exports none."""
    for var in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        url = (env.get(var) or "").strip()
        if not url:
            continue
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path if var.endswith("TRACES_ENDPOINT") else parts.path.rstrip("/") + "/v1/traces"
        return var, parts.hostname, port, path
    return None


def _check_port(where, var, port, path, ports, collector):
    """The export port/path against the collector's OTLP/HTTP receivers {port: (name, host, path)}."""
    if port not in ports:
        known = ", ".join(f"{p} ({r[0]})" for p, r in sorted(ports.items())) or "none"
        return [f"{where}: {var} sends to port {port}, which is no OTLP/HTTP receiver of a traces "
                f"pipeline of {collector} (its OTLP/HTTP receivers: {known}; 4317 is gRPC, which "
                f"the binary does not speak)"]
    receiver, host, want_path = ports[port]
    errors = []
    if host in ("localhost", "127.0.0.1", "::1"):
        errors.append(f"{where}: {collector}'s {receiver} http receiver listens on {host}:{port}, "
                      f"which other containers cannot reach")
    if path != want_path:
        errors.append(f"{where}: {var} posts to {path}, {collector}'s {receiver} takes traces on {want_path}")
    return errors


# --- docker-compose.yml -----------------------------------------------------------------------

def check_compose(compose, read_file):
    """compose: the parsed docker-compose.yml; read_file(path) → parsed YAML of a repo file.

    Returns (errors, notes)."""
    errors, notes = [], []
    services = compose.get("services", {})
    for svc_name in ("todo-service", "migrate"):
        env = {k: str(v) for k, v in ((services.get(svc_name) or {}).get("environment") or {}).items()}
        where = f"docker-compose.yml {svc_name}"
        errors += check_env(env, where)
        target = export_target(env)
        if target is None:
            if svc_name == "todo-service":
                errors.append(f"{where}: no OTEL_EXPORTER_OTLP_ENDPOINT: the stack's collector gets no spans")
            continue
        var, host, port, path = target
        collector = services.get(host)
        if collector is None:
            errors.append(f"{where}: {var} names host {host}, which is no service of docker-compose.yml")
            continue
        cfg_path = _compose_collector_config(collector)
        if cfg_path is None:
            errors.append(f"{where}: {var} names {host}, but that service mounts no collector config "
                          f"(--config=<file> from a ./ volume)")
            continue
        cfg = read_file(cfg_path)
        ports = otlp_http_ports(cfg)
        errors += _check_port(where, var, port, path, ports, f"{host} ({cfg_path})")
        exposed = {str(p).split("/")[0] for p in collector.get("expose", [])} | \
                  {str(p).rsplit(":", 1)[-1].split("/")[0] for p in collector.get("ports", [])}
        if str(port) not in exposed:
            errors.append(f"{where}: {host} does not expose port {port}")
        if not errors:
            notes.append(f"{svc_name}: {var} → {host}:{port}{path} is {ports[port][0]}'s OTLP/HTTP "
                         f"receiver in a traces pipeline of {cfg_path}")
    return errors, notes


def _compose_collector_config(svc):
    """The repo path (./...) of the config file a collector service runs with."""
    command = svc.get("command") or []
    if isinstance(command, str):
        command = command.split()
    inside = next((c.split("=", 1)[1] for c in command if str(c).startswith("--config=")), None)
    if inside is None:
        return None
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) >= 2 and parts[1] == inside and parts[0].startswith("./"):
                return parts[0][2:]
    return None


# --- Kubernetes ------------------------------------------------------------------------------

def chart_effective_config(values, chart, version):
    """The collector configuration the chart makes from an Application's values: the chart's
    default `config` (its key paths from the key index; values it does not hold are
    CHART_DEFAULT) with the Application's `config` merged over it the way Helm coalesces
    (maps merge, lists and scalars replace, null deletes). Presets are not modelled: the
    check fails when one is enabled."""
    paths, _open, _free = chart_values.load_index(chart, version)
    config_paths = [p[1:] for p in paths if p[0] == "config" and len(p) > 1]
    parents = {p[:-1] for p in config_paths}
    base = {}
    for p in sorted(config_paths, key=len):
        node = base
        for k in p[:-1]:
            node = node.setdefault(k, {})
        node.setdefault(p[-1], {} if p in parents else CHART_DEFAULT)

    def coalesce(dst, src):
        for k, v in src.items():
            if v is None:
                dst.pop(k, None)
            elif isinstance(v, dict) and isinstance(dst.get(k), dict):
                coalesce(dst[k], v)
            else:
                dst[k] = _strip_nulls(v)
        return dst

    return coalesce(base, values.get("config") or {})


def _strip_nulls(v):
    if isinstance(v, dict):
        return {k: _strip_nulls(x) for k, x in v.items() if x is not None}
    return v


def collector_facts(addon_docs, app="otel-collector"):
    """What the rendered otel-collector Application makes: namespace, Service name, pod
    labels, service ports, effective config, values. Raises LookupError without it."""
    application = manifests.find(addon_docs, "Application", app)
    src = application["spec"]["source"]
    values = src.get("helm", {}).get("valuesObject", {})
    chart, version = src["chart"], src["targetRevision"]
    release = src.get("helm", {}).get("releaseName") or application["metadata"]["name"]
    name = values.get("nameOverride") or chart
    if values.get("fullnameOverride"):
        fullname = values["fullnameOverride"][:63].rstrip("-")
    elif name in release:
        fullname = release[:63].rstrip("-")
    else:
        fullname = f"{release}-{name}"[:63].rstrip("-")
    component = {"deployment": "standalone-collector", "daemonset": "agent-collector",
                 "statefulset": "statefulset-collector"}.get(values.get("mode"))
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": release}
    if component:
        labels["component"] = component
    ports = {}
    for pname, port in (values.get("ports") or {}).items():
        if isinstance(port, dict) and port.get("enabled"):
            ports[pname] = port
    return {
        "application": application, "values": values, "chart": chart, "version": version,
        "namespace": application["spec"]["destination"]["namespace"], "service": fullname,
        "labels": labels, "ports": ports, "mode": values.get("mode"),
        "config": chart_effective_config(values, chart, version),
    }


def _selector_matches(selector, labels):
    if selector is None:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        got = labels.get(e["key"])
        op, vals = e["operator"], e.get("values", [])
        ok = {"In": got in vals, "NotIn": got not in vals, "Exists": e["key"] in labels,
              "DoesNotExist": e["key"] not in labels}[op]
        if not ok:
            return False
    return True


def _peer_matches(peer, ns, pod_labels, own_ns):
    """A NetworkPolicy peer (from/to entry) admits a pod with these labels in namespace ns."""
    if "ipBlock" in peer:
        return False
    ns_labels = {"kubernetes.io/metadata.name": ns}
    if "namespaceSelector" in peer:
        if not _selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif ns != own_ns:
        return False
    return _selector_matches(peer.get("podSelector"), pod_labels)


def _port_allowed(rule, port):
    ports = rule.get("ports")
    return not ports or any(p.get("port") in (port, None) and p.get("protocol", "TCP") == "TCP" for p in ports)


def check_k8s(where, docs, facts, terraform_sg_ports=None):
    """The service of rendered `docs` against the collector `facts` of the same environment."""
    errors, notes = [], []
    deploy = manifests.find(docs, "Deployment", "todo-service")
    c = manifests.container(deploy, "todo-service")
    env, _secrets = manifests.env_of(docs, c)
    errors += check_env(env, where)
    target = export_target(env)
    if target is None:
        return errors + [f"{where}: no OTEL_EXPORTER_OTLP_ENDPOINT: spans are never exported"], notes
    var, host, port, path = target
    svc_ns = deploy["metadata"]["namespace"]
    m = re.fullmatch(r"([a-z0-9-]+)(?:\.([a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?)?", host or "")
    if not m:
        return errors + [f"{where}: {var} host {host!r} is not a Kubernetes Service name"], notes
    name, ns = m.group(1), m.group(2) or svc_ns
    if (name, ns) != (facts["service"], facts["namespace"]):
        errors.append(f"{where}: {var} names Service {name} in namespace {ns}; the otel-collector "
                      f"Application makes Service {facts['service']} in namespace {facts['namespace']}")
    if facts["mode"] == "daemonset" and facts["values"].get("service", {}).get("enabled") is not True:
        errors.append(f"{where}: the collector runs as a DaemonSet without a Service")
    for preset, spec in (facts["values"].get("presets") or {}).items():
        if isinstance(spec, dict) and spec.get("enabled"):
            errors.append(f"{where}: otel-collector preset {preset} is enabled: this check does not model "
                          f"what presets add to the configuration")
    errors += check_collector_config(facts["config"], f"{where} otel-collector config")
    if "health_check" not in ((facts["values"].get("config") or {}).get("service") or {}).get("extensions", []):
        errors.append(f"{where}: otel-collector values must list config.service.extensions with health_check "
                      f"(the chart's probes and its NOTES require it)")
    receivers = otlp_http_ports(facts["config"])
    svc_port = next((p for p in facts["ports"].values() if p.get("servicePort") == port), None)
    if svc_port is None:
        errors.append(f"{where}: {var} sends to port {port}; the Service {facts['service']} has no such "
                      f"port among its enabled ports (servicePort of {sorted(facts['ports'])}; each must be "
                      f"spelt out in the values, the chart's defaults are not read)")
        return errors, notes
    container_port = svc_port.get("containerPort")
    if svc_port.get("protocol", "TCP") != "TCP":
        errors.append(f"{where}: Service port {port} is {svc_port.get('protocol')}, not TCP")
    errors += _check_port(where, var, container_port, path, receivers,
                          f"otel-collector (Service port {port} → container port {container_port})")
    # NetworkPolicies: the service's pods may go out to the collector's pods on the container
    # port (every policy that selects them for Egress; no policy at all means open).
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    egress = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"].get("namespace", svc_ns) == svc_ns
              and _selector_matches(d["spec"].get("podSelector"), pod_labels)
              and "Egress" in d["spec"].get("policyTypes", ["Ingress"] + (["Egress"] if "egress" in d["spec"] else []))]
    if egress and not any(
            _port_allowed(rule, container_port)
            and (not rule.get("to") or any(_peer_matches(peer, facts["namespace"], facts["labels"], svc_ns)
                                           for peer in rule["to"]))
            for d in egress for rule in d["spec"].get("egress") or []):
        errors.append(f"{where}: no egress NetworkPolicy rule lets todo-service's pods reach the collector's "
                      f"pods ({facts['namespace']}, {facts['labels']}) on TCP {container_port} "
                      f"(policies selecting them: {', '.join(d['metadata']['name'] for d in egress)})")
    np = facts["values"].get("networkPolicy") or {}
    if np.get("enabled"):
        sources = np.get("allowIngressFrom") or []
        if sources and not any(_peer_matches(peer, svc_ns, pod_labels, facts["namespace"]) for peer in sources):
            errors.append(f"{where}: the collector's NetworkPolicy (networkPolicy.allowIngressFrom) does not admit "
                          f"todo-service's pods ({svc_ns}, {pod_labels})")
    if terraform_sg_ports is not None and container_port not in terraform_sg_ports:
        errors.append(f"{where}: the pods' security group (terraform/modules/security-groups in_cluster_ports "
                      f"{sorted(terraform_sg_ports)}) does not let the pods out on TCP {container_port}")
    if not errors:
        notes.append(f"{var} → {facts['service']}.{facts['namespace']}:{port}{path} → container port "
                     f"{container_port}, {receivers[container_port][0]}'s OTLP/HTTP receiver in a traces "
                     f"pipeline; NetworkPolicies and the pods' security group let it through")
    return errors, notes


def terraform_in_cluster_ports(text):
    """The default of variable in_cluster_ports in terraform/modules/security-groups/variables.tf."""
    m = re.search(r'variable "in_cluster_ports"\s*\{.*?default\s*=\s*\[([^\]]*)\]', text, re.S)
    return {int(x) for x in re.findall(r"\d+", m.group(1))} if m else set()


def check_collector_addon(env, addon_docs):
    """The collector Application against the rest of the environment's add-ons: X-Ray in the
    cluster's region (the Load Balancer Controller's), deployment.environment = env, and its
    ServiceMonitor selected by kube-prometheus-stack's Prometheus."""
    errors = []
    facts = collector_facts(addon_docs)
    cfg, values = facts["config"], facts["values"]
    region = manifests.find(addon_docs, "Application", "aws-load-balancer-controller")[
        "spec"]["source"]["helm"]["valuesObject"].get("region")
    for name, body in (cfg.get("exporters") or {}).items():
        if _type(name) == "awsxray" and isinstance(body, dict) and body.get("region") != region:
            errors.append(f"{env}: otel-collector exporter {name} region {body.get('region')!r}, "
                          f"the cluster is in {region!r}")
    envs = [a.get("value") for p, body in (cfg.get("processors") or {}).items() if _type(p) == "resource"
            for a in body.get("attributes", []) if a.get("key") == "deployment.environment"]
    if envs != [env]:
        errors.append(f"{env}: otel-collector sets deployment.environment to {envs}, expected [{env!r}]")
    kps = manifests.find(addon_docs, "Application", "kube-prometheus-stack")["spec"]["source"]["helm"]["valuesObject"]
    selector = kps.get("prometheus", {}).get("prometheusSpec", {}).get("serviceMonitorSelector")
    sm = values.get("serviceMonitor") or {}
    if sm.get("enabled"):
        if not (values.get("ports", {}).get("metrics") or {}).get("enabled"):
            errors.append(f"{env}: otel-collector serviceMonitor is on but ports.metrics is not enabled")
        if not _selector_matches(selector, sm.get("extraLabels") or {}):
            errors.append(f"{env}: kube-prometheus-stack's serviceMonitorSelector {selector} does not select "
                          f"the otel-collector ServiceMonitor (extraLabels {sm.get('extraLabels')})")
    return errors


def self_test_k8s(docs, facts, sg_ports):
    """The k8s check must report known-bad variants of docs; returns what it missed."""
    import copy

    deploy = manifests.find(docs, "Deployment", "todo-service")
    cm_name = next(s["configMapRef"]["name"] for s in manifests.container(deploy, "todo-service").get("envFrom", [])
                   if "configMapRef" in s)
    missed = []
    for var, bad in (("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{facts['service']}.{facts['namespace']}.svc.cluster.local:4317"),
                     ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.observability.svc.cluster.local:4318"),
                     ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")):
        mutated = copy.deepcopy(docs)
        manifests.find(mutated, "ConfigMap", cm_name)["data"][var] = bad
        if not check_k8s("self-test", mutated, facts, sg_ports)[0]:
            missed.append(f"{var}={bad}")
    # An egress policy that lets the pods out on the gRPC port only.
    mutated = copy.deepcopy(docs)
    for d in mutated:
        if d["kind"] == "NetworkPolicy":
            for rule in d["spec"].get("egress") or []:
                for p in rule.get("ports") or []:
                    if p.get("port") == 4318:
                        p["port"] = 4317
    if not check_k8s("self-test", mutated, facts, sg_ports)[0]:
        missed.append("an egress NetworkPolicy without 4318")
    return missed
