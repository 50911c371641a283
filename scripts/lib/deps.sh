#!/usr/bin/env bash
# Sourced by scripts/run and scripts/test: makes sure PostgreSQL and NATS (JetStream)
# are reachable and exports
#   PG_SERVER_URL  postgres://…/ of a server where we may create databases (trust/user auth)
#   DATABASE_URL   the service's database on that server (created when missing)
#   NATS_URL       a NATS server with JetStream
#   PG_BIN         directory of PostgreSQL's server binaries (initdb, pg_ctl) for tests
#                  that run a private instance of their own
# Order: DATABASE_URL / NATS_URL when given; else the usual 127.0.0.1:5432 / :4222; else
# private servers under .local/, installing Debian's packages with apt-get when missing.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
LOCAL="$ROOT/.local"
mkdir -p "$LOCAL"

say() { echo "deps: $*" >&2; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install $* (no apt-get): install it yourself"; return 1
  fi
  say "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2; }
}

pg_bin_dir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

pg_ok() { psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1; }

# Runs a PostgreSQL server binary as the postgres user when we are root (it refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_private_pg() {
  local bin data port=55432
  bin=$(pg_bin_dir) || { apt_install postgresql >/dev/null; bin=$(pg_bin_dir); }
  [ -n "$bin" ] || { say "PostgreSQL server binaries not found"; return 1; }
  data="$LOCAL/pg/data"
  mkdir -p "$LOCAL/pg"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$LOCAL/pg"; chmod o+x "$ROOT" "$LOCAL" 2>/dev/null || true; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a private PostgreSQL in $data"
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  if ! pg_ok "postgres://postgres@127.0.0.1:$port/postgres"; then
    say "starting the private PostgreSQL on 127.0.0.1:$port"
    as_pg "$bin/pg_ctl" -D "$data" -l "$LOCAL/pg/server.log" -w -t 30 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $LOCAL/pg -c max_connections=300" start >/dev/null
  fi
  PG_SERVER_URL="postgres://postgres@127.0.0.1:$port"
}

ensure_postgres() {
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client >/dev/null || apt_install postgresql >/dev/null
  if [ -n "${DATABASE_URL:-}" ]; then
    pg_ok "$DATABASE_URL" || { say "DATABASE_URL is set but unreachable"; return 1; }
    PG_SERVER_URL=${PG_SERVER_URL:-${DATABASE_URL%/*}}
  elif pg_ok "postgres://postgres@127.0.0.1:5432/postgres"; then
    PG_SERVER_URL="postgres://postgres@127.0.0.1:5432"
  else
    start_private_pg
  fi
  if [ -z "${DATABASE_URL:-}" ]; then
    DATABASE_URL="$PG_SERVER_URL/todos"
    pg_ok "$DATABASE_URL" || psql "$PG_SERVER_URL/postgres" -qc 'CREATE DATABASE todos' >/dev/null
  fi
  PG_BIN=${PG_BIN:-$(pg_bin_dir || true)}
  if [ -z "$PG_BIN" ]; then apt_install postgresql >/dev/null; PG_BIN=$(pg_bin_dir || true); fi
  export PG_SERVER_URL DATABASE_URL PG_BIN
  say "PostgreSQL: $PG_SERVER_URL"
}

tcp_ok() { (exec 3<>"/dev/tcp/$1/$2") >/dev/null 2>&1; }

ensure_nats() {
  local hostport host port
  if [ -n "${NATS_URL:-}" ]; then
    hostport=${NATS_URL#*://}; hostport=${hostport##*@}; host=${hostport%:*}; port=${hostport##*:}
    tcp_ok "$host" "$port" || { say "NATS_URL is set but unreachable"; return 1; }
  elif tcp_ok 127.0.0.1 4222; then
    NATS_URL="nats://127.0.0.1:4222"
  else
    command -v nats-server >/dev/null 2>&1 || apt_install nats-server >/dev/null
    port=54222
    mkdir -p "$LOCAL/nats"
    if ! tcp_ok 127.0.0.1 "$port"; then
      say "starting a private nats-server (JetStream) on 127.0.0.1:$port"
      nohup nats-server -a 127.0.0.1 -p "$port" -js -sd "$LOCAL/nats/store" \
        -l "$LOCAL/nats/server.log" >/dev/null 2>&1 &
      echo $! > "$LOCAL/nats/pid"
      for _ in $(seq 50); do tcp_ok 127.0.0.1 "$port" && break; sleep 0.1; done
    fi
    NATS_URL="nats://127.0.0.1:$port"
  fi
  export NATS_URL
  say "NATS: $NATS_URL"
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
  say "cargo not found: install Rust (rustup) first"; return 1
}
