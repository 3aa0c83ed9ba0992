#!/usr/bin/env bash
# Offline checks of the Terraform configuration (no providers, no AWS):
#
#   1. terraform fmt -check -recursive   (only when a terraform binary exists)
#   2. checkov --skip-download: with the defaults, and again with every optional
#      resource switched on (deploy/tests/tf-all-features.tfvars), since checkov
#      leaves out resources whose count evaluates to 0
#   3. deploy/tests/test_terraform.py: python-hcl2 parse + structural checks
#
# Environment: TF_DIR (deploy/terraform/aws), TERRAFORM (terraform),
# CHECKOV, PYTHON (default: .tools/bin/*).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
TF_DIR="${TF_DIR:-deploy/terraform/aws}"
TERRAFORM="${TERRAFORM:-terraform}"
CHECKOV="${CHECKOV:-.tools/bin/checkov}"
PYTHON="${PYTHON:-.tools/bin/deploy-python}"
ALL_FEATURES="deploy/tests/tf-all-features.tfvars"

for tool in "$CHECKOV" "$PYTHON"; do
  if [[ ! -x "$tool" ]] && ! command -v "$tool" >/dev/null 2>&1; then
    echo "tf-check: $tool not found; run: make -f deploy/deploy.mk deploy-tools" >&2
    exit 2
  fi
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
skipped=0
failures=()
ok() { passed=$((passed + 1)); printf 'PASS %s\n' "$1"; }
ko() {
  failed=$((failed + 1)); failures+=("$1"); printf 'FAIL %s\n' "$1"
  [[ -s "$TMP/out" ]] && sed 's/^/     | /' "$TMP/out" | head -n 60
  return 0
}
section() { printf '\n== %s\n' "$1"; }

section "terraform fmt"
if command -v "$TERRAFORM" >/dev/null 2>&1; then
  # A TF_CLI_CONFIG_FILE that points nowhere only adds a warning: drop it.
  tf_env=()
  if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "$TF_CLI_CONFIG_FILE" ]]; then tf_env=(-u TF_CLI_CONFIG_FILE); fi
  version="$(env "${tf_env[@]}" "$TERRAFORM" version 2>/dev/null | head -n 1)"
  if env "${tf_env[@]}" "$TERRAFORM" fmt -check -recursive -diff "$TF_DIR" >"$TMP/out" 2>&1; then
    ok "terraform fmt -check -recursive ($version)"
  else
    ko "terraform fmt -check -recursive ($version): run terraform fmt -recursive $TF_DIR"
  fi
else
  skipped=$((skipped + 1))
  printf 'SKIP terraform fmt -check: no terraform binary on PATH (set TERRAFORM=... to use one)\n'
fi

section "checkov (terraform, --skip-download)"
# checkov_run NAME ARGS...
checkov_run() {
  local name="$1"; shift
  "$CHECKOV" -d "$TF_DIR" --framework terraform --skip-download --compact "$@" \
    >"$TMP/checkov.out" 2>"$TMP/checkov.err"
  local rc=$?
  local summary
  summary="$(grep -m1 -E '^Passed checks:' "$TMP/checkov.out" || true)"
  if [[ $rc -eq 0 ]]; then
    ok "checkov $name: ${summary:-no findings}"
  else
    { grep -B1 -A2 -E 'FAILED for resource' "$TMP/checkov.out"; grep -v 'Failed to download module' "$TMP/checkov.err"; } >"$TMP/out"
    ko "checkov $name: ${summary:-exit $rc}"
  fi
}
checkov_run "(defaults)"
checkov_run "(all optional resources: $ALL_FEATURES)" --var-file "$ALL_FEATURES"

section "python-hcl2 parse and structure (deploy/tests/test_terraform.py)"
if "$PYTHON" deploy/tests/test_terraform.py --dir "$TF_DIR" >"$TMP/hcl.log" 2>&1; then
  sed 's/^/     /' "$TMP/hcl.log"
  ok "test_terraform.py: $(tail -n 1 "$TMP/hcl.log")"
else
  cp "$TMP/hcl.log" "$TMP/out"
  ko "test_terraform.py: $(tail -n 1 "$TMP/hcl.log")"
fi

printf '\n'
if [[ $failed -gt 0 ]]; then
  printf 'tf-check failed:\n'
  printf '  - %s\n' "${failures[@]}"
fi
printf 'tf-check: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
[[ $failed -eq 0 ]]
