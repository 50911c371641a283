"""The PostgreSQL connection budget of todo-service (docs/connection-budget.md).

Per pod, from the settings the rendered overlay gives the container (service defaults
otherwise):
    DB_POOL_SIZE          pooled connections (readiness checks, maintenance)
  + WRITER_CONNECTIONS    the writer's connections, one write batch in flight on each
  + QUERY_SHARDS          one connection per query shard
  + 1                     LISTEN connection for cross-replica cache invalidation
  = steady state;  + 1 short-lived connection for the migrations at start-up.
Per environment: every pod at its start-up figure, for the HPA's maxReplicas plus the
rolling update's maxSurge, plus the migrate Job (one pod at a time), plus an allowance for
operators (psql, scripts/db-backup, monitoring). Against RDS's default max_connections,
LEAST(DBInstanceClassMemory / 9531392, 5000), from the instance class in
terraform/environments/<env>: the nominal memory gives an upper bound (RDS subtracts the
memory its own processes use, and reserves 3 + 2 connections for superusers).
"""

import os
import re

import manifests

ROOT = manifests.ROOT

# The service's defaults (`todo-service --help`); scripts/ops/check-deploy-env compares
# them with the binary it runs.
DEFAULTS = {"DB_POOL_SIZE": 4, "WRITER_CONNECTIONS": 2, "QUERY_SHARDS": 4}
LISTEN_CONNECTIONS = 1
MIGRATION_CONNECTIONS = 1
JOB_CONNECTIONS = 1  # `todo-service migrate`
OPERATOR_ALLOWANCE = 10
# The environment at its peak may use at most this share of the nominal max_connections.
MAX_SHARE = 0.5

# Memory (GiB) of the instance classes the environments may use (RDS instance types).
RDS_MEMORY_GIB = {
    "db.t4g.micro": 1, "db.t4g.small": 2, "db.t4g.medium": 4, "db.t4g.large": 8,
    "db.t4g.xlarge": 16, "db.t4g.2xlarge": 32,
    "db.m6g.large": 8, "db.m6g.xlarge": 16, "db.m6g.2xlarge": 32,
    "db.m7g.large": 8, "db.m7g.xlarge": 16, "db.m7g.2xlarge": 32, "db.m7g.4xlarge": 64,
    "db.r6g.large": 16, "db.r6g.xlarge": 32, "db.r7g.large": 16, "db.r7g.xlarge": 32,
}

BEGIN, END = "<!-- connection-budget:begin (scripts/ops/check-connection-budget --write) -->", \
    "<!-- connection-budget:end -->"


def per_pod(env):
    """Connections of one pod given its environment (a dict of variables)."""
    got = {k: int(env.get(k, v)) for k, v in DEFAULTS.items()}
    steady = got["DB_POOL_SIZE"] + got["WRITER_CONNECTIONS"] + got["QUERY_SHARDS"] + LISTEN_CONNECTIONS
    return {**got, "listen": LISTEN_CONNECTIONS, "steady": steady, "start": steady + MIGRATION_CONNECTIONS}


def max_connections(instance_class):
    return min(RDS_MEMORY_GIB[instance_class] * 2**30 // 9531392, 5000)


def terraform_default(env_name, variable):
    """The default of a variable in terraform/environments/<env>/variables.tf."""
    with open(os.path.join(ROOT, "terraform/environments", env_name, "variables.tf")) as f:
        text = f.read()
    block = re.search(r'variable\s+"%s"\s*\{(.*?)\n\}' % re.escape(variable), text, re.S)
    if not block:
        raise LookupError(f"terraform/environments/{env_name}: no variable {variable}")
    m = re.search(r"^\s*default\s*=\s*(.+?)\s*$", block.group(1), re.M)
    if not m:
        raise LookupError(f"terraform/environments/{env_name}: variable {variable} has no default")
    return m.group(1).strip('"')


def environment(overlay):
    """The budget of one environment, from its rendered overlay and its Terraform defaults."""
    docs = manifests.render(overlay)
    name = os.path.basename(overlay)
    dep = manifests.find(docs, "Deployment", "todo-service")
    plain, _ = manifests.env_of(docs, manifests.container(dep, "todo-service"))
    pod = per_pod(plain)
    hpa = manifests.find(docs, "HorizontalPodAutoscaler", "todo-service")
    surge = dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    if isinstance(surge, str):
        raise ValueError(f"{overlay}: maxSurge {surge}: give a number of pods")
    pods = hpa["spec"]["maxReplicas"] + surge
    service = pods * pod["start"] + JOB_CONNECTIONS
    total = service + OPERATOR_ALLOWANCE
    instance = terraform_default(name, "db_instance_class")
    limit = max_connections(instance)
    return {
        "env": name, "pod": pod, "min": hpa["spec"]["minReplicas"], "max": hpa["spec"]["maxReplicas"],
        "surge": surge, "pods": pods, "service": service, "total": total, "instance": instance,
        "memory": RDS_MEMORY_GIB[instance], "max_connections": limit,
        "alarm": int(terraform_default(name, "db_max_connections_alarm")),
    }


def check(b):
    """Errors of one environment's budget."""
    errors = []
    if b["total"] > MAX_SHARE * b["max_connections"]:
        errors.append(f"{b['env']}: {b['total']} connections at the HPA maximum exceed "
                      f"{int(MAX_SHARE * 100)}% of max_connections {b['max_connections']} ({b['instance']}): "
                      "lower maxReplicas or per-pod connections, take a larger instance, or add RDS Proxy")
    if not b["total"] <= b["alarm"] <= min(2 * b["total"], 0.8 * b["max_connections"]):
        errors.append(f"{b['env']}: db_max_connections_alarm {b['alarm']} must be at least the peak "
                      f"budget {b['total']} (no alarm at a normal peak) and at most twice it and 80% of "
                      f"max_connections ({int(0.8 * b['max_connections'])}), so a leak is noticed early")
    return errors


def table(budgets):
    """The Markdown table of docs/connection-budget.md."""
    rows = [
        ("environment", *[b["env"] for b in budgets]),
        ("per pod: pool (DB_POOL_SIZE)", *[str(b["pod"]["DB_POOL_SIZE"]) for b in budgets]),
        ("per pod: writer (WRITER_CONNECTIONS)", *[str(b["pod"]["WRITER_CONNECTIONS"]) for b in budgets]),
        ("per pod: query shards (QUERY_SHARDS)", *[str(b["pod"]["QUERY_SHARDS"]) for b in budgets]),
        ("per pod: LISTEN (cache invalidation)", *[str(b["pod"]["listen"]) for b in budgets]),
        ("**per pod, steady**", *[f"**{b['pod']['steady']}**" for b in budgets]),
        ("per pod at start-up (+1 migration)", *[str(b["pod"]["start"]) for b in budgets]),
        ("HPA min / max, rolling-update surge", *[f"{b['min']} / {b['max']}, +{b['surge']}" for b in budgets]),
        ("pods at most (max + surge)", *[str(b["pods"]) for b in budgets]),
        ("service at most (pods x start-up + migrate Job 1)", *[str(b["service"]) for b in budgets]),
        (f"+ operators (psql, backups, monitoring)", *[str(OPERATOR_ALLOWANCE) for _ in budgets]),
        ("**environment at the HPA maximum**", *[f"**{b['total']}**" for b in budgets]),
        ("RDS instance class (memory)", *[f"{b['instance']} ({b['memory']} GiB)" for b in budgets]),
        ("max_connections, nominal upper bound", *[str(b["max_connections"]) for b in budgets]),
        ("share of max_connections at the maximum", *[f"{100 * b['total'] / b['max_connections']:.0f}%" for b in budgets]),
        ("CloudWatch alarm DatabaseConnections >", *[str(b["alarm"]) for b in budgets]),
    ]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)
