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
Each run stops the binary with SIGTERM by PID (spans still buffered are flushed then) and
drops its database.

Environment: TODO_SERVICE_BIN, PG_SERVER_URL, ROOT.
"""

import http.server
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from urllib.parse import urlsplit, urlunsplit

import yaml

import manifests
from metrics_contract import CheckFailed, free_port, psql, request, tail

ROOT = manifests.ROOT
READY_S = 60
EXPORT_WAIT_S = 15


def say(msg=""):
    print(msg, flush=True)


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


class Service:
    def __init__(self, binary, pg, tmp, name, otel_env):
        self.binary, self.pg, self.tmp, self.name = binary, pg, tmp, name
        self.otel_env = otel_env
        self.db = f"check_traces_{name}_{os.getpid()}"
        self.api = f"http://127.0.0.1:{free_port()}"
        self.admin = f"http://127.0.0.1:{free_port()}"
        self.log = os.path.join(tmp, f"serve-{name}.log")
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
            # Export soon after the spans end instead of the SDK's default 5 s.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            **self.otel_env,
        }
        self.out = open(self.log, "w")
        self.proc = subprocess.Popen([self.binary, "serve"], env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=self.tmp)
        shown = " ".join(f"{k}={v}" for k, v in sorted(self.otel_env.items()))
        say(f"[{self.name}] started pid {self.proc.pid} (API {self.api}, database {self.db}) with {shown}")
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"[{self.name}] serve exited {self.proc.returncode} before /readyz "
                                  f"answered 200:\n{tail(self.log)}")
            try:
                status, _, _ = request("GET", f"{self.admin}/readyz", timeout=1)
            except (urllib.error.URLError, OSError):
                status = 0
            if status == 200:
                return
            time.sleep(0.2)
        raise CheckFailed(f"[{self.name}] /readyz did not answer 200 within {READY_S}s:\n{tail(self.log)}")

    def create(self, title, traceparent=None):
        headers = {"traceparent": traceparent} if traceparent else {}
        status, _, text = request("POST", f"{self.api}/api/todos", {"title": title}, headers)
        if status != 201:
            raise CheckFailed(f"[{self.name}] POST /api/todos answered {status}: {text[:200]}")
        return json.loads(text)["id"]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=30)
                say(f"[{self.name}] stopped pid {self.proc.pid} with SIGTERM (exit {rc})")
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                say(f"[{self.name}] pid {self.proc.pid} still running 30 s after SIGTERM: killed")
        if self.proc:
            self.out.close()
        try:
            psql(self.pg, f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        except subprocess.CalledProcessError as e:
            say(f"[{self.name}] could not drop database {self.db}: {e.stderr.strip()}")


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
    env = rewrite(otel, collector.port)
    svc = Service(binary, pg, tmp, "compose", env)
    errors = []
    try:
        svc.start()
        svc.create("check-traces")

        def arrived(posts):
            return any(p == "/v1/traces" and ct.split(";")[0].strip() == "application/x-protobuf"
                       and b"POST /api/todos" in b for p, ct, b in posts)

        ok = wait_for(collector, arrived)
        posts = collector.snapshot()
        if not ok:
            errors.append(f"[compose] no POST /v1/traces with Content-Type application/x-protobuf carrying the "
                          f"span POST /api/todos arrived within {EXPORT_WAIT_S}s (got: {describe(posts)})")
        elif not any(b"todo-service" in b for _, _, b in posts):
            errors.append("[compose] the exported spans do not name service.name todo-service")
        else:
            say(f"[compose] ok: {describe(posts)}; spans name todo-service and POST /api/todos")
    finally:
        svc.stop()
    return errors


def run_sampling(binary, pg, tmp, collector, overlay="k8s/overlays/production"):
    """The overlay's sampler: a caller's sampled traceparent is exported, an unsampled one not."""
    otel = overlay_otel_env(overlay)
    env = rewrite(otel, collector.port)
    name = os.path.basename(overlay)
    svc = Service(binary, pg, tmp, name, env)
    sampled, unsampled = secrets.token_hex(16), secrets.token_hex(16)
    errors = []
    collector.clear()
    try:
        svc.start()
        svc.create("unsampled caller", f"00-{unsampled}-{secrets.token_hex(8)}-00")
        svc.create("sampled caller", f"00-{sampled}-{secrets.token_hex(8)}-01")
        want = bytes.fromhex(sampled)
        ok = wait_for(collector, lambda posts: any(want in b for _, _, b in posts))
        svc.stop()  # flushes whatever is still buffered
        posts = collector.snapshot()
        if not ok:
            errors.append(f"[{name}] the create that continued a sampled traceparent (trace {sampled}) was not "
                          f"exported within {EXPORT_WAIT_S}s (got: {describe(posts)})")
        if any(bytes.fromhex(unsampled) in b for _, _, b in posts):
            errors.append(f"[{name}] the create that continued an unsampled traceparent (trace {unsampled}) was "
                          f"exported: OTEL_TRACES_SAMPLER={otel.get('OTEL_TRACES_SAMPLER')} is not followed")
        if not errors:
            say(f"[{name}] ok: OTEL_TRACES_SAMPLER={otel.get('OTEL_TRACES_SAMPLER')} "
                f"OTEL_TRACES_SAMPLER_ARG={otel.get('OTEL_TRACES_SAMPLER_ARG')}: the sampled caller's trace was "
                f"exported, the unsampled caller's was not")
    finally:
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
