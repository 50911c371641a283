#!/bin/sh
# One-shot `nats-init` service (natsio/nats-box): creates or updates the JetStream
# streams from /streams/*.json (nats/streams/ in the repository). The file name is
# the stream name. Idempotent: an existing stream is updated in place; a change the
# server refuses to apply in place (e.g. retention) fails this job, and with it
# `docker compose up`, instead of leaving a stream that differs from its definition.
set -eu

# As user `admin` of nats/nats-server.conf: docker-compose.yml puts its password in the URL.
server="${NATS_URL:?NATS_URL must be set (nats://admin:PASSWORD@nats:4222)}"
found=0
for file in /streams/*.json; do
  [ -e "$file" ] || continue
  found=1
  name=$(basename "$file" .json)
  if nats --server "$server" stream info "$name" >/dev/null 2>&1; then
    echo "nats-init: updating stream $name from $file"
    nats --server "$server" stream edit "$name" --config "$file" --force
  else
    echo "nats-init: creating stream $name from $file"
    nats --server "$server" stream add "$name" --config "$file"
  fi
done
if [ "$found" -eq 0 ]; then
  echo "nats-init: no stream definitions in /streams" >&2
  exit 1
fi
nats --server "$server" stream ls
