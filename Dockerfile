# syntax=docker/dockerfile:1
# Container image of the todo service (DESIGN.md §10, STYLE.md §12).
#
# Three cargo-chef stages (zero2prod): `planner` reduces the workspace to a recipe
# of its dependencies, `builder` compiles that recipe first (a Docker layer that is
# reused until Cargo.toml/Cargo.lock change) and then the service itself. The
# SQL migrations are embedded in the binary at compile time, so nothing but the
# binary reaches the runtime image.
#
#   docker build -t todo-service:local \
#     --build-arg VERSION="$(git describe --always)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     --build-arg SOURCE_URL="$(git remote get-url origin)" .
#
# The builder and the runtime must share a glibc: Debian 12 (bookworm) on both
# sides, hence `-bookworm` for Rust and `-debian12` for distroless.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION=0.1.77
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /app

# Computes recipe.json: the dependency graph of the workspace without its sources.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Builds the dependencies from the recipe (cached layer), then the service.
FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin todo-service
COPY . .
RUN cargo build --release --locked --bin todo-service

# Runtime: glibc, libgcc, CA certificates and tzdata; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="todo-service" \
      org.opencontainers.image.description="Todo service: REST and NATS edges over an actor system backed by PostgreSQL" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

# Owned by root and not writable by the service user; uid/gid 1000 match the pod
# securityContext (runAsUser/runAsGroup 1000, readOnlyRootFilesystem) in k8s/base.
COPY --from=builder /app/target/release/todo-service /usr/local/bin/todo-service
USER 1000:1000

# API, then admin (/livez, /readyz, /metrics).
EXPOSE 8080 9000

# `todo-service healthcheck` GETs http://127.0.0.1:9000/livez: exec form, no shell needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/todo-service", "healthcheck"]

# Graceful shutdown on SIGTERM takes up to SHUTDOWN_DELAY_S + SHUTDOWN_GRACE_S + ~5 s
# (30 s by default): give `docker stop -t 40` / compose `stop_grace_period: 40s`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/todo-service"]
CMD ["serve"]
