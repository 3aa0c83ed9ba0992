#!/usr/bin/env bash
# Build the shoal runtime images offline, from binaries compiled on the host.
#
#   deploy/scripts/docker-build-images.sh [SERVICE...]   # default: tracker peer webserver
#
# For each service: stage shoal-<svc> and shoal (the CLI, used by HEALTHCHECK),
# plus shoal-trace-sink for the tracker image (the compose cluster's trace sink
# runs from it), from target/release into a tiny build context, then build the `prebuilt`
# stage of deploy/docker/<svc>.Dockerfile on top of the local base image
# (deploy/scripts/docker-base-image.sh builds it once, without any registry).
# Tags: shoal-<svc>:$VERSION and shoal-<svc>:latest.
#
# Environment:
#   VERSION            image version tag/label             (default 0.1.0)
#   SHOAL_BASE_IMAGE   runtime base image                  (default shoal-base:bookworm)
#   CARGO_TARGET_DIR   where cargo put release binaries    (default <repo>/target)
#   SHOAL_IMAGE_SOURCE org.opencontainers.image.source     (default: Cargo.toml repository)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VERSION="${VERSION:-0.1.0}"
BASE_IMAGE="${SHOAL_BASE_IMAGE:-shoal-base:bookworm}"
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/release"
STAGE_ROOT="$ROOT/.cache/docker/context"
SERVICES=("$@")
[[ ${#SERVICES[@]} -gt 0 ]] || SERVICES=(tracker peer webserver)

# The binaries staged for a service's image.
bins_of() {
  case $1 in
    tracker) echo "shoal-tracker shoal-trace-sink shoal" ;;
    *) echo "shoal-$1 shoal" ;;
  esac
}

log() { printf '[docker-build-images] %s\n' "$*" >&2; }
die() { printf '[docker-build-images] ERROR: %s\n' "$*" >&2; exit 1; }

# Fail early and clearly when a binary is missing: nothing is built half-way.
missing=()
for svc in "${SERVICES[@]}"; do
  [[ -f $ROOT/deploy/docker/$svc.Dockerfile ]] || die "unknown service '$svc' (no deploy/docker/$svc.Dockerfile)"
  for b in $(bins_of "$svc"); do
    [[ -x $BIN_DIR/$b ]] || missing+=("$BIN_DIR/$b")
  done
done
if [[ ${#missing[@]} -gt 0 ]]; then
  die "missing release binaries: $(printf '%s ' "${missing[@]}" | sort -u | tr '\n' ' ')
       build them first: cargo build --release --locked   (or: make release)"
fi

# The legacy builder is enough (and the only one available without buildx);
# respect an explicit DOCKER_BUILDKIT from the caller.
if [[ -z ${DOCKER_BUILDKIT:-} ]] && ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi

"$ROOT/deploy/scripts/docker-base-image.sh"

REVISION="$(git -C "$ROOT" rev-parse --verify -q HEAD 2>/dev/null || echo unknown)"
SOURCE="${SHOAL_IMAGE_SOURCE:-$(sed -n 's/^repository *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)}"
SOURCE="${SOURCE:-https://github.com/shoal-p2p/shoal}"

for svc in "${SERVICES[@]}"; do
  ctx="$STAGE_ROOT/$svc"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  for b in $(bins_of "$svc"); do
    cp -p "$BIN_DIR/$b" "$ctx/$b"
    chmod 0755 "$ctx/$b"
  done
  log "building shoal-$svc:$VERSION (revision $REVISION) from $ctx"
  if ! docker build \
      -f "$ROOT/deploy/docker/$svc.Dockerfile" \
      --target prebuilt \
      --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      --build-arg "VERSION=$VERSION" \
      --build-arg "REVISION=$REVISION" \
      --build-arg "SOURCE=$SOURCE" \
      -t "shoal-$svc:$VERSION" -t "shoal-$svc:latest" \
      "$ctx" >"$ctx.log" 2>&1; then
    tail -n 40 "$ctx.log" >&2
    die "docker build of shoal-$svc failed (full log: $ctx.log)"
  fi
  # Smoke test: the host-built binaries must load on the image's libc (ldd
  # reports missing libraries and symbol versions), and the CLI must run.
  if ! out=$(docker run --rm --network none --entrypoint sh "shoal-$svc:$VERSION" -c \
      'for b in /usr/local/bin/*; do ldd "$b" || exit 1; done 2>&1 | { ! grep -i "not found"; } && shoal --version' 2>&1); then
    printf '%s\n' "$out" | tail -n 5 >&2
    die "the binaries do not run inside shoal-$svc:$VERSION"
  fi
  size=$(docker image inspect -f '{{.Size}}' "shoal-$svc:$VERSION" | awk '{printf "%.0f MB", $1/1e6}')
  log "shoal-$svc:$VERSION and :latest ready ($size)"
done
