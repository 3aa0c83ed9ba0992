# shoal-tracker image.
#
# Stages (in this order on purpose: the classic builder stops at --target and
# never touches the stages after it, so the offline build needs no Rust image):
#   runtime   base image + user 10001 + data volume + metadata   (shared)
#   prebuilt  COPYs binaries compiled on the host; the build context is a
#             staging dir holding only shoal-tracker, shoal-trace-sink and shoal
#             (used by `make images`)
#   builder   compiles the workspace with `cargo build --release --locked`
#   release   (default, last) runtime + binaries from builder; context = repo root
#
# From source (needs registry access):
#   docker build -f deploy/docker/tracker.Dockerfile -t shoal-tracker .
# Offline, from host binaries: see deploy/scripts/docker-build-images.sh
#
# The image also ships shoal-trace-sink, the development OTLP/gRPC receiver
# (the compose cluster runs it with `entrypoint: ["shoal-trace-sink"]`,
# SHOAL_LISTEN_ADDR=0.0.0.0:4317 and SHOAL_TRACE_FILE=/var/lib/shoal/traces.jsonl).
ARG RUST_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS runtime
# ca-certificates for TLS to external endpoints (already in the local base).
RUN set -eu; \
    if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 shoal; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/shoal --no-create-home \
            --shell /usr/sbin/nologin shoal; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/shoal
ENV SHOAL_LISTEN_ADDR=0.0.0.0:50052 \
    SHOAL_METRICS_ADDR=0.0.0.0:9102 \
    SHOAL_DATA_DIR=/var/lib/shoal
VOLUME ["/var/lib/shoal"]
WORKDIR /var/lib/shoal
USER 10001:10001
EXPOSE 50052 9102
# `shoal health` calls grpc.health.v1.Health/Check and exits 0 when SERVING.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["shoal", "health", "127.0.0.1:50052"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["shoal-tracker"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/shoal-p2p/shoal
LABEL org.opencontainers.image.title="shoal-tracker" \
      org.opencontainers.image.description="shoal tracker: peer registry, catalogue, placement and repair (also ships shoal-trace-sink and the shoal CLI)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

FROM runtime AS prebuilt
COPY shoal-tracker shoal-trace-sink shoal /usr/local/bin/

FROM ${RUST_IMAGE} AS builder
# protoc: shoal-proto falls back to a vendored one (protoc-bin-vendored).
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && install -d /out \
 && install -m 0755 target/release/shoal-tracker target/release/shoal-trace-sink target/release/shoal /out/

FROM runtime AS release
COPY --from=builder /out/shoal-tracker /out/shoal-trace-sink /out/shoal /usr/local/bin/
