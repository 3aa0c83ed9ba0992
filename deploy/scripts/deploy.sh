#!/usr/bin/env bash
# Deploy shoal with Helm into the current kube context (or render and validate
# only, with --dry-run). Called by `make deploy` (deploy/deploy.mk), which builds
# the images first with `make images` unless DRY_RUN=1.
#
#   deploy/scripts/deploy.sh [--dry-run] [--images-only] [--preflight]
#
# Images are deployed under the tag VERSION-gCOMMIT (VERSION-gCOMMIT-dirty-HASH for a
# tree with uncommitted changes), and the chart is pinned to it: every deploy rolls
# exactly what changed, and a registry with immutable tags (ECR) accepts every push.
# --preflight checks, in under 10 s, what a real deploy needs (a reachable cluster, a
# registry or a kind cluster, nodes of the images' architecture) and stops with one line.
#
# Environment (all optional):
#   VERSION       version of the images built by make images  (0.1.0)
#   IMAGE_TAG     tag to deploy                               (VERSION-gCOMMIT[-dirty-HASH])
#   REGISTRY      registry/path to push to and pull from      (empty: local images, no push)
#   NAMESPACE     target namespace                            (shoal)
#   RELEASE       Helm release name                           (shoal)
#   VALUES        extra values files, space separated         (e.g. helm/shoal/values-production.yaml)
#   HELM_SET      extra --set assignments, space separated    (e.g. "webserver.replicas=3")
#   KUBE_CONTEXT  kube context                                (default: the current one)
#   KIND_CLUSTER  without REGISTRY: `kind load` the images into this kind cluster
#   HELM_TIMEOUT  helm --timeout                              (10m)
#   HELM, KUBERNETES_VALIDATE, DOCKER, K8S_VERSIONS           tools and versions to validate against
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

DRY_RUN=0
IMAGES_ONLY=0
PREFLIGHT=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --images-only) IMAGES_ONLY=1 ;;
    --preflight) PREFLIGHT=1 ;;
    *) echo "deploy.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

VERSION="${VERSION:-0.1.0}"
REGISTRY="${REGISTRY:-}"
REGISTRY="${REGISTRY%/}"
NAMESPACE="${NAMESPACE:-shoal}"
RELEASE="${RELEASE:-shoal}"
VALUES="${VALUES:-}"
HELM_SET="${HELM_SET:-}"
KUBE_CONTEXT="${KUBE_CONTEXT:-}"
KIND_CLUSTER="${KIND_CLUSTER:-}"
HELM_TIMEOUT="${HELM_TIMEOUT:-10m}"
HELM="${HELM:-.tools/bin/helm}"
KUBECTL="${KUBECTL:-$(dirname "$HELM")/kubectl}"
KUBERNETES_VALIDATE="${KUBERNETES_VALIDATE:-.tools/bin/kubernetes-validate}"
DOCKER="${DOCKER:-docker}"
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.31.0}"
CHART="helm/shoal"
SERVICES=(tracker peer webserver)

log() { printf '[deploy] %s\n' "$*"; }
die() { printf '[deploy] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- the tag: the version and the commit (offline: git only)
commit_tag() {
  local commit
  commit="$(git rev-parse --short=12 HEAD 2>/dev/null)" || { echo "$VERSION"; return; }
  if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    echo "$VERSION-g$commit-dirty-$(git diff HEAD | sha256sum | cut -c1-8)"
  else
    echo "$VERSION-g$commit"
  fi
}
TAG="${IMAGE_TAG:-$(commit_tag)}"

# ---- preflight: what a real deploy needs, checked in seconds ----------------------
preflight() {
  [[ -x "$KUBECTL" ]] || command -v "$KUBECTL" >/dev/null 2>&1 \
    || die "preflight: $KUBECTL not found: run make -f deploy/deploy.mk deploy-tools"
  [[ -n "$REGISTRY" || -n "$KIND_CLUSTER" ]] \
    || die "preflight: set REGISTRY (where the nodes pull images from) or KIND_CLUSTER (to kind-load them)"
  local kctx=() out arch want
  [[ -n "$KUBE_CONTEXT" ]] && kctx=(--context "$KUBE_CONTEXT")
  if ! out="$(timeout 8 "$KUBECTL" "${kctx[@]}" --request-timeout=5s get nodes \
        -o 'jsonpath={.items[*].status.nodeInfo.architecture}' 2>&1)"; then
    die "preflight: cluster of context ${KUBE_CONTEXT:-(current)} not reachable: $(printf '%s' "$out" | tail -n 1 | cut -c1-200)"
  fi
  [[ -n "$out" ]] || die "preflight: the cluster of context ${KUBE_CONTEXT:-(current)} has no nodes"
  case "$(uname -m)" in
    x86_64|amd64) want=amd64 ;;
    aarch64|arm64) want=arm64 ;;
    *) want="$(uname -m)" ;;
  esac
  for arch in $out; do
    [[ "$arch" == "$want" ]] \
      || die "preflight: a node runs $arch but the images are built here for $want (build on a $arch machine)"
  done
  log "preflight OK: context ${KUBE_CONTEXT:-(current)}, nodes $want, registry ${REGISTRY:-<kind $KIND_CLUSTER>}, tag $TAG"
}
if [[ $PREFLIGHT -eq 1 ]]; then
  preflight
  exit 0
fi

# ---- helm arguments shared by the dry run and the real install
helm_args=(--namespace "$NAMESPACE" --set-string "global.image.tag=$TAG")
if [[ -n "$REGISTRY" ]]; then
  helm_args+=(--set-string "global.image.registry=$REGISTRY")
fi
for f in $VALUES; do
  [[ -f "$f" ]] || die "values file $f not found (paths are relative to the repository root)"
  helm_args+=(-f "$f")
done
for s in $HELM_SET; do
  helm_args+=(--set "$s")
done
ctx_args=()
[[ -n "$KUBE_CONTEXT" ]] && ctx_args=(--kube-context "$KUBE_CONTEXT")

image_ref() { # image_ref SERVICE
  if [[ -n "$REGISTRY" ]]; then echo "$REGISTRY/shoal-$1:$TAG"; else echo "shoal-$1:$TAG"; fi
}

# ---- dry run: render and validate, no cluster, no images -----------------------
if [[ $DRY_RUN -eq 1 ]]; then
  [[ -x "$HELM" ]] || die "$HELM not found: run make -f deploy/deploy.mk deploy-tools"
  log "DRY RUN: release $RELEASE, namespace $NAMESPACE, version $VERSION, image tag $TAG, registry ${REGISTRY:-<none: local images>}"
  log "helm lint --strict"
  "$HELM" lint --strict "$CHART" "${helm_args[@]}"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  for kv in $K8S_VERSIONS; do
    "$HELM" template "$RELEASE" "$CHART" "${helm_args[@]}" --kube-version "$kv" >"$tmp/manifest-$kv.yaml"
    n="$(grep -c '^kind:' "$tmp/manifest-$kv.yaml")"
    log "helm template | kubernetes-validate --strict -k $kv ($n resources)"
    if ! "$KUBERNETES_VALIDATE" --strict --quiet -k "$kv" "$tmp/manifest-$kv.yaml" >"$tmp/validate.out" 2>&1; then
      cat "$tmp/validate.out" >&2
      die "kubernetes-validate failed for Kubernetes $kv"
    fi
    # ServiceMonitor is a CRD without a bundled schema; report anything else.
    grep -v "Couldn't find schema for kind ServiceMonitor" "$tmp/validate.out" || true
  done
  log "helm install --dry-run=client"
  "$HELM" install "$RELEASE" "$CHART" "${helm_args[@]}" --dry-run=client >"$tmp/install.txt"
  log "would deploy these images:"
  for svc in "${SERVICES[@]}"; do log "  $(image_ref "$svc")"; done
  log "would run: $HELM upgrade --install $RELEASE $CHART ${helm_args[*]} ${ctx_args[*]} --create-namespace --wait --timeout $HELM_TIMEOUT"
  log "dry run OK (nothing was built, pushed or installed)"
  exit 0
fi

# ---- images: tag and push ------------------------------------------------------------
command -v "$DOCKER" >/dev/null || die "$DOCKER not found"
for svc in "${SERVICES[@]}"; do
  "$DOCKER" image inspect "shoal-$svc:$VERSION" >/dev/null 2>&1 \
    || die "image shoal-$svc:$VERSION not found: build it with make images VERSION=$VERSION"
  # The commit tag, locally too (kind loads it; the chart is pinned to it).
  "$DOCKER" tag "shoal-$svc:$VERSION" "shoal-$svc:$TAG"
done
if [[ -n "$REGISTRY" ]]; then
  if [[ "$REGISTRY" =~ ^([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com ]] && command -v aws >/dev/null; then
    log "logging in to ECR ${BASH_REMATCH[1]} (${BASH_REMATCH[2]})"
    aws ecr get-login-password --region "${BASH_REMATCH[2]}" \
      | "$DOCKER" login --username AWS --password-stdin "${REGISTRY%%/*}"
  fi
  for svc in "${SERVICES[@]}"; do
    ref="$(image_ref "$svc")"
    log "push $ref"
    "$DOCKER" tag "shoal-$svc:$TAG" "$ref"
    "$DOCKER" push "$ref"
  done
elif [[ -n "$KIND_CLUSTER" ]]; then
  for svc in "${SERVICES[@]}"; do
    log "kind load shoal-$svc:$TAG into $KIND_CLUSTER"
    kind load docker-image --name "$KIND_CLUSTER" "shoal-$svc:$TAG"
  done
else
  log "REGISTRY not set: nothing pushed; the nodes must already have shoal-<service>:$TAG"
fi
[[ $IMAGES_ONLY -eq 1 ]] && exit 0

# ---- helm upgrade --install ------------------------------------------------------
[[ -x "$HELM" ]] || die "$HELM not found: run make -f deploy/deploy.mk deploy-tools"
log "helm upgrade --install $RELEASE into namespace $NAMESPACE (context: ${KUBE_CONTEXT:-current})"
"$HELM" upgrade --install "$RELEASE" "$CHART" "${helm_args[@]}" "${ctx_args[@]}" \
  --create-namespace --wait --timeout "$HELM_TIMEOUT"
log "deployed; smoke test: $HELM test $RELEASE -n $NAMESPACE ${ctx_args[*]} --logs"
