"""Runs the built binary exactly as each rendered overlay runs it (scripts/ops/check-deploy-env).

For every k8s/overlays/<env>:
  1. render it (`kubectl kustomize`), take the migrate Job's and the Deployment's container:
     command/args, envFrom ConfigMaps, env values, secretKeyRefs, mounted files;
  2. check each secretKeyRef is a key that an ExternalSecret of the overlay puts into that
     Secret (else the pod would never start), and fill it with a stand-in of its kind;
  3. replace what only exists in the cluster, and say so: listen addresses → free 127.0.0.1
     ports, the database → a fresh one on the local PostgreSQL, cluster hostnames → local
     ones or closed local ports, mounted files → temp files of the right kind;
  4. `migrate` with exactly the Job's environment: exit 0 within a bound;
  5. `serve` with exactly the Deployment's environment: /livez (startup probe) and /readyz
     (readiness probe) answer 200 within the startup probe's budget, /metrics serves every
     series the autoscaling reads (scripts/ops/lib/autoscaling.py), the smoke test of CD
     (.github/scripts/smoke with .github/scripts/smoke-token) passes in the overlay's
     AUTH_MODE, the PostgreSQL connections it holds stay within the per-pod budget
     (docs/connection-budget.md); then SIGTERM by PID: /readyz turns 503 and the
     process exits 0 within terminationGracePeriodSeconds.
Environment: TODO_SERVICE_BIN, PG_SERVER_URL (a server where we may create databases),
NATS_URL (optional, a local NATS server).
"""

import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import autoscaling  # noqa: E402
import budget  # noqa: E402
import manifests  # noqa: E402

ROOT = manifests.ROOT
BIN = os.environ["TODO_SERVICE_BIN"]
PG = os.environ["PG_SERVER_URL"].rstrip("/")
LOCAL_NATS = os.environ.get("NATS_URL", "")
MIGRATE_TIMEOUT_S = 60
READY_CAP_S = 60


class CheckFailed(Exception):
    pass


def say(msg):
    print(f"   {msg}", flush=True)


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


def psql(sql, db="postgres"):
    return subprocess.run(
        ["psql", f"{PG}/{db}", "-Atqc", sql], check=True, capture_output=True, text=True
    ).stdout.strip()


def http_get(url, timeout=2):
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


# --- stand-ins -------------------------------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def stand_in_file(var, path, tmp, notes, api_keys):
    """A temp file of the kind the service expects in `var`; returns its path."""
    local = os.path.join(tmp, "files", path.lstrip("/"))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    work = tempfile.mkdtemp(dir=tmp)
    if var == "DB_CA_FILE":
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=stand-in CA",
                "-keyout", "ca.key", "-out", local, cwd=work)
        notes.append(f"{var}={path} → a freshly made CA certificate (PEM) in a temp dir")
    elif var == "JWT_PUBLIC_KEY_FILE":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "jwt.key", cwd=work)
        openssl("pkey", "-in", "jwt.key", "-pubout", "-out", local, cwd=work)
        notes.append(f"{var}={path} → a freshly made RSA public key (PEM) in a temp dir")
    elif var == "API_KEYS_FILE":
        key = secrets.token_hex(32)
        with open(local, "w") as f:
            f.write(f"# stand-in keys file of check-deploy-env\n{hashlib.sha256(key.encode()).hexdigest()} smoke\n")
        api_keys.append(key)
        notes.append(f"{var}={path} → a keys file with one fresh key of owner `smoke`")
    else:
        raise CheckFailed(f"{var}={path}: no stand-in known for this file; teach check-deploy-env its kind")
    return local


def stand_in_secret(var, db_url, notes):
    if var == "DATABASE_URL":
        notes.append("DATABASE_URL (secret) → a fresh database on the local PostgreSQL, without "
                     "sslmode=require (the local server has no TLS; DB_CA_FILE is still read and parsed)")
        return db_url
    if var == "JWT_SECRET":
        notes.append("JWT_SECRET (secret) → 48 random bytes (base64url), above the 32-byte minimum")
        return secrets.token_urlsafe(48)
    if var == "ADMIN_TOKEN":
        notes.append("ADMIN_TOKEN (secret) → 32 random bytes (hex)")
        return secrets.token_hex(32)
    raise CheckFailed(f"secret {var}: no stand-in known; teach check-deploy-env its kind")


def container_env(docs, workload, c, db_url, tmp, ports):
    """The environment the container would get, with stand-ins; (env, notes, api_keys)."""
    plain, secret_refs = manifests.env_of(docs, c)
    notes, api_keys, env = [], [], {}
    for var, (secret, key) in sorted(secret_refs.items()):
        keys = manifests.external_secret_keys(docs, secret)
        if keys is None:
            raise CheckFailed(f"env {var}: Secret {secret} is made by no ExternalSecret of this overlay")
        if key not in keys:
            raise CheckFailed(f"env {var}: Secret {secret} gets no key {key} from its ExternalSecret "
                              f"(it has {sorted(keys)})")
        env[var] = stand_in_secret(var, db_url, notes)
    for var, value in sorted(plain.items()):
        if var in ("HTTP_ADDR", "ADMIN_ADDR"):
            port = int(value.rsplit(":", 1)[1])
            ports.setdefault(port, free_port())
            env[var] = f"127.0.0.1:{ports[port]}"
            notes.append(f"{var}={value} → {env[var]}")
        elif var.endswith("_FILE") and value.startswith("/"):
            volume, _ = manifests.mounted_source(workload, c, value)
            if volume is None:
                raise CheckFailed(f"{var}={value}: no volume of the pod is mounted there")
            env[var] = stand_in_file(var, value, tmp, notes, api_keys)
        elif var == "NATS_URL" and value:
            if LOCAL_NATS and tcp_open(LOCAL_NATS.split("://", 1)[-1].split("@")[-1]):
                env[var] = LOCAL_NATS
                notes.append(f"NATS_URL={value} → the local NATS server {LOCAL_NATS}")
            else:
                notes.append(f"NATS_URL={value} dropped: no local NATS server (NATS_URL unset); "
                             "the service runs HTTP-only without it")
        elif var == "OTEL_EXPORTER_OTLP_ENDPOINT" and value:
            env[var] = f"http://127.0.0.1:{free_port()}"
            notes.append(f"{var}={value} → {env[var]} (nothing listens: an unreachable collector)")
        elif ".svc" in value or "cluster.local" in value:
            raise CheckFailed(f"{var}={value} names a cluster host: teach check-deploy-env a local stand-in")
        else:
            env[var] = value
    return env, notes, api_keys


# --- runs -------------------------------------------------------------------------------------

def argv(c):
    if c.get("command"):
        raise CheckFailed(f"container {c['name']} overrides the image's ENTRYPOINT: {c['command']}")
    return [BIN, *c.get("args", [])]


def tail(path, n=40):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def run_migrate(docs, overlay, db_url, tmp):
    job = manifests.find(docs, "Job", "todo-service-migrate")
    c = manifests.container(job)
    env, notes, _ = container_env(docs, job, c, db_url, tmp, {})
    print(f"\n-- {overlay}: migrate Job ({' '.join(c.get('args', []))}) with exactly its environment")
    for n in notes:
        say(n)
    say("variables: " + ", ".join(sorted(env)))
    log = os.path.join(tmp, "migrate.log")
    with open(log, "w") as out:
        try:
            rc = subprocess.run(argv(c), env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=MIGRATE_TIMEOUT_S, cwd=tmp).returncode
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"migrate did not finish within {MIGRATE_TIMEOUT_S}s:\n{tail(log)}")
    if rc != 0:
        raise CheckFailed(f"migrate exited {rc} (the Job would fail and the deploy stop):\n{tail(log)}")
    say("ok: migrate exited 0")


def probe_url(c, probe, ports):
    get = c[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == port)
    if port not in ports:
        raise CheckFailed(f"{probe} port {port}: no *_ADDR variable makes the service listen there")
    return f"http://127.0.0.1:{ports[port]}{get['path']}"


def wait_for(url, seconds, proc, log):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = http_get(url)
        if status == 200:
            return body
        if proc.poll() is not None:
            raise CheckFailed(f"serve exited {proc.returncode} before {url} answered 200:\n{tail(log)}")
        time.sleep(0.2)
    raise CheckFailed(f"{url} did not answer 200 within {seconds}s (last: {status} {body[:200]}):\n{tail(log)}")


def connections(db):
    return int(psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"))


def run_serve(docs, overlay, db, db_url, tmp):
    dep = manifests.find(docs, "Deployment", "todo-service")
    c = manifests.container(dep, "todo-service")
    ports = {}
    env, notes, api_keys = container_env(docs, dep, c, db_url, tmp, ports)
    print(f"\n-- {overlay}: Deployment ({' '.join(c.get('args', []))}) with exactly its environment")
    for n in notes:
        say(n)
    say("variables: " + ", ".join(sorted(env)))
    startup = c["startupProbe"]
    bound = min(READY_CAP_S, startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))
    grace = manifests.pod_spec(dep).get("terminationGracePeriodSeconds", 30)
    livez, readyz = probe_url(c, "startupProbe", ports), probe_url(c, "readinessProbe", ports)
    admin = readyz.rsplit("/", 1)[0]
    api = f"http://127.0.0.1:{ports[next(p['containerPort'] for p in c['ports'] if p['name'] == 'api')]}"
    log = os.path.join(tmp, "serve.log")
    out = open(log, "w")
    proc = subprocess.Popen(argv(c), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        t0 = time.monotonic()
        wait_for(livez, bound, proc, log)
        body = wait_for(readyz, bound, proc, log)
        say(f"ok: /{livez.split('/', 3)[-1]} and /readyz 200 after {time.monotonic() - t0:.1f}s "
            f"(startup budget {bound}s): {body.strip()}")

        # Autoscaling seam: what the HPA scales on is served by this binary.
        status, metrics_text = http_get(f"{admin}/metrics")
        if status != 200:
            raise CheckFailed(f"{admin}/metrics answered {status}")
        addon_docs = manifests.render(autoscaling.addons_overlay(overlay))
        errors, notes = autoscaling.check_series_exported(docs, addon_docs, metrics_text)
        for line in notes:
            say(line)
        if errors:
            raise CheckFailed("; ".join(errors))

        # The smoke test of CD, authenticated in the overlay's AUTH_MODE.
        smoke_env = dict(os.environ, SMOKE_RETRY_SECONDS="10", GITHUB_RUN_ID=f"check-{os.getpid()}")
        smoke_env.pop("SMOKE_API_KEY", None)
        smoke_env.pop("SMOKE_JWT_SECRET", None)
        if "JWT_SECRET" in env:
            smoke_env["SMOKE_JWT_SECRET"] = env["JWT_SECRET"]
        if api_keys:
            smoke_env["SMOKE_API_KEY"] = api_keys[0]
        token = subprocess.run([os.path.join(ROOT, ".github/scripts/smoke-token"), overlay], env=smoke_env,
                               check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        smoke_env["SMOKE_TOKEN"] = token
        mode = env.get("AUTH_MODE", "none")
        if mode != "none" and not token:
            raise CheckFailed(f"AUTH_MODE={mode} but smoke-token made no credential")
        smoke = subprocess.run([os.path.join(ROOT, ".github/scripts/smoke"), api], env=smoke_env,
                               capture_output=True, text=True, cwd=ROOT)
        for line in smoke.stdout.strip().splitlines():
            say(f"smoke | {line}")
        if smoke.returncode != 0:
            raise CheckFailed(f"smoke test failed (AUTH_MODE={mode}):\n{smoke.stdout}{smoke.stderr}")
        say(f"ok: smoke test through the API with AUTH_MODE={mode} "
            f"({'a JWT minted by smoke-token' if mode == 'jwt' else 'an API key' if mode == 'api-key' else 'no credential'})")

        # Connection budget seam: what one pod holds stays within the documented budget.
        held = connections(db)
        per_pod = budget.per_pod(env)
        say(f"PostgreSQL connections held by this pod: {held} (budget per pod, "
            f"docs/connection-budget.md: {per_pod['steady']} steady, {per_pod['start']} at start-up)")
        if held > per_pod["steady"]:
            raise CheckFailed(f"the pod holds {held} PostgreSQL connections, more than its budget "
                              f"of {per_pod['steady']}: update scripts/ops/lib/budget.py and the budget")

        # Shutdown: /readyz 503 at once, exit 0 within the grace period.
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while True:
            status, _ = http_get(readyz, timeout=1)
            if status == 503:
                break
            if time.monotonic() - t0 > 3:
                raise CheckFailed(f"/readyz still answered {status} 3s after SIGTERM (the ALB would keep sending)")
            time.sleep(0.1)
        say(f"ok: /readyz 503 {time.monotonic() - t0:.1f}s after SIGTERM")
        try:
            rc = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"serve still running {grace}s after SIGTERM (terminationGracePeriodSeconds): "
                              f"Kubernetes would SIGKILL it")
        if rc != 0:
            raise CheckFailed(f"serve exited {rc} after SIGTERM:\n{tail(log)}")
        say(f"ok: exited 0 {time.monotonic() - t0:.1f}s after SIGTERM "
            f"(terminationGracePeriodSeconds {grace})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()


def check_budget_defaults():
    """The per-pod budget assumes the service's defaults: compare them with this binary's."""
    text = subprocess.run([BIN, "--help"], check=True, capture_output=True, text=True).stdout
    defaults = dict(re.findall(r"\[env: ([A-Z_]+)=?[^\]]*\]\s*\[default: ([^\]]+)\]", text))
    wrong = {k: defaults.get(k) for k, v in budget.DEFAULTS.items() if defaults.get(k) != str(v)}
    if wrong:
        raise CheckFailed(f"the binary's defaults {wrong} differ from the connection budget's "
                          f"{budget.DEFAULTS}: update scripts/ops/lib/budget.py and docs/connection-budget.md")
    say(f"ok: the binary's defaults match the connection budget's ({budget.DEFAULTS})")


def main():
    failures = 0
    try:
        check_budget_defaults()
    except CheckFailed as e:
        failures += 1
        print(f"   FAIL: {e}", flush=True)
    for overlay in manifests.overlays():
        docs = manifests.render(overlay)
        db = f"deploy_env_{os.path.basename(overlay)}_{os.getpid()}"
        tmp = tempfile.mkdtemp(prefix="check-deploy-env-")
        psql(f'CREATE DATABASE "{db}"')
        try:
            db_url = f"{PG}/{db}"
            run_migrate(docs, overlay, db_url, tmp)
            run_serve(docs, overlay, db, db_url, tmp)
        except CheckFailed as e:
            failures += 1
            print(f"   FAIL ({overlay}): {e}", flush=True)
        finally:
            psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        sys.exit(f"check-deploy-env: {failures} overlay(s) would not run as rendered")


if __name__ == "__main__":
    main()
