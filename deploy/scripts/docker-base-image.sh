#!/usr/bin/env bash
# Build (once) and cache a local Debian bookworm base image for the shoal
# runtime images, without pulling anything from a container registry.
#
#   deploy/scripts/docker-base-image.sh            # ensure the image exists
#   deploy/scripts/docker-base-image.sh --force    # rebuild the rootfs tarball
#
# Steps:
#   1. if the image (default shoal-base:bookworm) already exists: done;
#   2. if the cached rootfs tarball exists (.cache/docker/): `docker import` it;
#   3. otherwise debootstrap a minbase bookworm rootfs (with ca-certificates)
#      from the Debian mirror this machine's apt uses, tar it into the cache,
#      then import it.
#
# Environment:
#   SHOAL_BASE_IMAGE   image name:tag to produce   (default shoal-base:bookworm)
#   SHOAL_CACHE_DIR    cache directory             (default <repo>/.cache)
#   DEBIAN_MIRROR      override the mirror         (default: from /etc/apt/sources.list*)
#   DEBIAN_SUITE       suite                       (default bookworm)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE="${SHOAL_BASE_IMAGE:-shoal-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CACHE_DIR="${SHOAL_CACHE_DIR:-$ROOT/.cache}/docker"
TARBALL="$CACHE_DIR/${IMAGE//[:\/]/-}-rootfs.tar.gz"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[docker-base-image] %s\n' "$*" >&2; }
die() { printf '[docker-base-image] ERROR: %s\n' "$*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the docker daemon (is it running? are you in the docker group?)"

if [[ $FORCE -eq 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE already present"
  exit 0
fi

# Run a command as root (debootstrap needs it).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "root is required for: $*"
  fi
}

# First "deb" URI for the main Debian archive (not -security) in apt's config.
detect_mirror() {
  local f uri
  shopt -s nullglob
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/ && $i ~ /^https?:\/\//) { print $i; break } }' "$f" |
          grep -E '/debian/?$' | grep -v -- '-security' | head -n1 || true)
    [[ -n $uri ]] && { echo "${uri%/}"; return; }
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk 'tolower($1)=="uris:" { for (i=2;i<=NF;i++) print $i }' "$f" |
          grep -E '/debian/?$' | grep -v -- '-security' | head -n1 || true)
    [[ -n $uri ]] && { echo "${uri%/}"; return; }
  done
  echo "http://deb.debian.org/debian"
}

if [[ $FORCE -eq 1 || ! -s $TARBALL ]]; then
  if ! command -v debootstrap >/dev/null && [[ ! -x /usr/sbin/debootstrap ]]; then
    log "installing debootstrap via apt"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 || {
      as_root apt-get update -q >/dev/null
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
    }
  fi
  DEBOOTSTRAP=$(command -v debootstrap || echo /usr/sbin/debootstrap)
  MIRROR="${DEBIAN_MIRROR:-$(detect_mirror)}"
  mkdir -p "$CACHE_DIR"
  WORK=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'as_root rm -rf "$WORK"' EXIT
  log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
  as_root "$DEBOOTSTRAP" --variant=minbase --include=ca-certificates \
    "$SUITE" "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
      tail -n 30 "$WORK/debootstrap.log" >&2
      die "debootstrap failed (log above)"
    }
  # Trim what a container never needs (like debian:*-slim does).
  # shellcheck disable=SC2016  # expanded by the inner bash
  as_root bash -c '
    set -e; r="$1"
    rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
           "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
           "$r"/usr/share/locale/* "$r"/tmp/* "$r"/root/.bash_history
    find "$r"/usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
    : > "$r"/etc/machine-id
    echo "deb $2 $3 main" > "$r"/etc/apt/sources.list
  ' _ "$WORK/rootfs" "$MIRROR" "$SUITE"
  log "packing rootfs into $TARBALL"
  as_root tar --numeric-owner --xattrs -C "$WORK/rootfs" -czf "$TARBALL.part" .
  as_root chown "$(id -u):$(id -g)" "$TARBALL.part"
  mv -f "$TARBALL.part" "$TARBALL"
fi

log "importing $TARBALL as $IMAGE"
docker image rm "$IMAGE" >/dev/null 2>&1 || true
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE" \
  "$TARBALL" "$IMAGE" >/dev/null
docker run --rm --network none "$IMAGE" true || die "imported image $IMAGE does not run"
log "$IMAGE ready ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
