"""The trace export seam, against the real binary (scripts/ops/check-traces).

The offline checks (scripts/ops/lib/trace_seams.py) prove that docker-compose.yml and the
overlays name an OTLP/HTTP receiver of their collector. This proves the other half: that
the binary, given exactly those OTEL_* settings, really speaks that protocol there.

1. A stand-in collector: a tiny OTLP/HTTP listener on a free 127.0.0.1 port that records
   every POST (path, Content-Type, body) and answers 200 with an empty protobuf response.
2. docker-compose.yml's todo-service OTEL_* settings, with the endpoint's host:port
   rewritten to the listener (scheme and path kept): start the binary with a fresh
   database, create a todo, and fail unless a POST /v1/traces with Content-Type
   application/x-protobuf arrives whose spans name the service (todo-service) and the
   route (POST /api/todos).
3. The production overlay's OTEL_* settings as rendered (parentbased_traceidratio, 0.1),
   rewritten the same way: a create continuing a caller's sampled traceparent must be
   exported, one continuing an unsampled traceparent must not (the sampler settings are
   read, and a caller's decision is followed).
Each run stops the binary with SIGTERM by PID (metrics_contract.Service) (spans still buffered are flushed then) and
drops its database.

Environment: TODO_SERVICE_BIN, PG_SERVER_URL, ROOT.
"""

import http.server
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import yaml

import manifests
from metrics_contract import CheckFailed, Service, request, say, tail

ROOT = manifests.ROOT
EXPORT_WAIT_S = 15


# --- OTLP protobuf, just enough of it ----------------------------------------------------------
# ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }
# ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }
# Resource { repeated KeyValue attributes = 1 }   KeyValue { string key = 1; AnyValue value = 2 }
# AnyValue { string string_value = 1; ... }       ScopeSpans { scope = 1; repeated Span spans = 2 }
# Span { bytes trace_id = 1; bytes span_id = 2; ...; string name = 5; ... }
# (opentelemetry-proto's trace.proto and common.proto; field numbers are stable.)

def _fields(buf):
    """(field number, wire type, value) of a protobuf message; value is bytes for
    length-delimited fields, an int otherwise."""
    i, out = 0, []

    def varint():
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 2:
            n = varint()
            value, i = bytes(buf[i:i + n]), i + n
        elif wire == 5:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _sub(buf, number):
    return [v for n, w, v in _fields(buf) if n == number and w == 2]


def decode_spans(body):
    """[(service.name, trace id hex, span name)] of an OTLP/HTTP protobuf traces request."""
    spans = []
    for rs in _sub(body, 1):
        service = None
        for resource in _sub(rs, 1):
            for kv in _sub(resource, 1):
                key = b"".join(_sub(kv, 1)).decode()
                if key == "service.name":
                    service = b"".join(v for value in _sub(kv, 2) for v in _sub(value, 1)).decode()
        for ss in _sub(rs, 2):
            for span in _sub(ss, 2):
                trace_id = b"".join(_sub(span, 1)).hex()
                name = b"".join(_sub(span, 5)).decode()
                spans.append((service, trace_id, name))
    return spans


class Collector:
    """A stand-in OTLP/HTTP receiver: records POSTs, answers 200."""

    def __init__(self):
        self.posts = []
        self.lock = threading.Lock()
        posts, lock = self.posts, self.lock

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    posts.append((self.path, self.headers.get("Content-Type", ""), body))
                # An empty ExportTraceServiceResponse: full success.
                self.send_response(200)
                self.send_header("Content-Type", self.headers.get("Content-Type") or "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self):
        with self.lock:
            return list(self.posts)

    def clear(self):
        with self.lock:
            self.posts.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def rewrite(otel_env, port):
    """The OTEL_* settings with every endpoint's host:port moved to 127.0.0.1:port."""
    env = dict(otel_env)
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        if env.get(var):
            parts = urlsplit(env[var])
            env[var] = urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, parts.query, parts.fragment))
    return env


def start_service(binary, pg, tmp, name, otel_env):
    """The binary with these OTEL_* settings (metrics_contract.Service: free ports, a fresh
    database, no NATS), ready."""
    env = {
        # As compose and the overlays run it: spans below the filter's level are never
        # made, so never exported (RUST_LOG=warn exports nothing of a request).
        "RUST_LOG": "info",
        # Export soon after the spans end instead of the SDK's default 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        **otel_env,
    }
    svc = Service(binary, pg, "", tmp, name=f"check_traces_{name}", extra_env=env)
    shown = " ".join(f"{k}={v}" for k, v in sorted(otel_env.items()))
    say(f"[{name}] {shown}")
    svc.start()
    return svc


def create(svc, title, traceparent=None):
    headers = {"traceparent": traceparent} if traceparent else {}
    status, _, text = request("POST", f"{svc.api}/api/todos", {"title": title}, headers)
    if status != 201:
        raise CheckFailed(f"POST /api/todos answered {status}: {text[:200]}")
    return json.loads(text)["id"]


def wait_for(collector, pred, seconds=EXPORT_WAIT_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred(collector.snapshot()):
            return True
        time.sleep(0.1)
    return pred(collector.snapshot())


def compose_otel_env():
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    env = compose["services"]["todo-service"].get("environment") or {}
    return {k: str(v) for k, v in env.items() if k.startswith("OTEL_")}


def overlay_otel_env(overlay):
    docs = manifests.render(overlay)
    deploy = manifests.find(docs, "Deployment", "todo-service")
    env, _ = manifests.env_of(docs, manifests.container(deploy, "todo-service"))
    return {k: v for k, v in env.items() if k.startswith("OTEL_")}


def describe(posts):
    return "; ".join(f"POST {p} ({ct}, {len(b)} bytes)" for p, ct, b in posts) or "nothing"


def run_compose(binary, pg, tmp, collector):
    """docker-compose.yml's settings: spans arrive as OTLP/HTTP protobuf on /v1/traces."""
    otel = compose_otel_env()
    if not otel.get("OTEL_EXPORTER_OTLP_ENDPOINT") and not otel.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        raise CheckFailed("docker-compose.yml's todo-service sets no OTEL_EXPORTER_OTLP_ENDPOINT")
    svc = None
    errors = []
    try:
        svc = start_service(binary, pg, tmp, "compose", rewrite(otel, collector.port))
        create(svc, "check-traces")

        def arrived(posts):
            return any(p == "/v1/traces" and ct.split(";")[0].strip() == "application/x-protobuf"
                       and ("todo-service", "POST /api/todos") in {(s, n) for s, _, n in decode_spans(b)}
                       for p, ct, b in posts)

        ok = wait_for(collector, arrived)
        posts = collector.snapshot()
        if not ok:
            errors.append(f"[compose] no POST /v1/traces with Content-Type application/x-protobuf carrying the "
                          f"span POST /api/todos of service todo-service arrived within {EXPORT_WAIT_S}s "
                          f"(got: {describe(posts)}; serve log:\n{tail(svc.log, 10)})")
        else:
            names = sorted({n for _, _, b in posts if b for _, _, n in decode_spans(b)})
            say(f"[compose] ok: {describe(posts)}; service todo-service, spans {', '.join(names)}")
    finally:
        if svc:
            svc.stop()
    return errors


def run_sampling(binary, pg, tmp, collector, overlay="k8s/overlays/production"):
    """The overlay's sampler: a caller's sampled traceparent is exported, an unsampled one not."""
    otel = overlay_otel_env(overlay)
    name = os.path.basename(overlay)
    sampled, unsampled = secrets.token_hex(16), secrets.token_hex(16)
    svc = None
    errors = []
    collector.clear()
    try:
        svc = start_service(binary, pg, tmp, name, rewrite(otel, collector.port))
        create(svc, "unsampled caller", f"00-{unsampled}-{secrets.token_hex(8)}-00")
        create(svc, "sampled caller", f"00-{sampled}-{secrets.token_hex(8)}-01")
        def traces(posts):
            return {t for p, _, b in posts if p == "/v1/traces" for _, t, _ in decode_spans(b)}

        ok = wait_for(collector, lambda posts: sampled in traces(posts))
        svc.stop()  # flushes whatever is still buffered
        posts = collector.snapshot()
        if not ok:
            errors.append(f"[{name}] the create that continued a sampled traceparent (trace {sampled}) was not "
                          f"exported within {EXPORT_WAIT_S}s (got: {describe(posts)})")
        # A span of the unsampled trace (a root span of its own that links to it, such as
        # writer.batch, is another trace and may be sampled).
        if unsampled in traces(posts):
            errors.append(f"[{name}] the create that continued an unsampled traceparent (trace {unsampled}) was "
                          f"exported: OTEL_TRACES_SAMPLER={otel.get('OTEL_TRACES_SAMPLER')} is not followed")
        if not errors:
            say(f"[{name}] ok: OTEL_TRACES_SAMPLER={otel.get('OTEL_TRACES_SAMPLER')} "
                f"OTEL_TRACES_SAMPLER_ARG={otel.get('OTEL_TRACES_SAMPLER_ARG')}: the sampled caller's trace was "
                f"exported, the unsampled caller's was not")
    finally:
        if svc:
            svc.stop()
    return errors


def main():
    binary = os.environ["TODO_SERVICE_BIN"]
    pg = os.environ["PG_SERVER_URL"].rstrip("/")
    tmp = tempfile.mkdtemp(prefix="check-traces-")
    collector = Collector()
    say(f"stand-in OTLP/HTTP collector on 127.0.0.1:{collector.port}")
    try:
        errors = run_compose(binary, pg, tmp, collector)
        errors += run_sampling(binary, pg, tmp, collector)
    finally:
        collector.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if errors:
        for e in errors:
            print(f"FAIL: {e}", flush=True)
        raise CheckFailed(f"{len(errors)} failure(s)")


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        sys.exit(f"check-traces: {e}")
