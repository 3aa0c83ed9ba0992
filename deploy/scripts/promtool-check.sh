#!/usr/bin/env bash
# Offline checks of the Prometheus configuration (no Prometheus server needed):
#
#   1. promtool check rules  deploy/prometheus/alerts.yml
#   2. promtool check config deploy/prometheus/prometheus.yml (also loads alerts.yml)
#   3. promtool test rules   deploy/prometheus/alerts_test.yml (the alerts fire when
#      they should, and not before: lost chunks after 1m, under-replication after 5m...)
#   4. every PromQL query of deploy/grafana/*.json parses (promtool check rules on a
#      generated rule file, Grafana's $__ variables replaced by sample values)
#
# promtool comes from Debian's `prometheus` package (the only Debian package that
# ships it). When promtool is not on PATH the script installs that package once:
# `apt-get update` then `apt-get install --no-install-recommends prometheus`, non-
# interactively (needs root, or passwordless sudo). The package's daemon is not
# started in containers (policy-rc.d / no init system) and is not needed.
#
# Environment: PROMTOOL (promtool binary; default: promtool on PATH),
# PROM_DIR (deploy/prometheus), GRAFANA_DIR (deploy/grafana). Exit status: 0 all passed, 1 a check failed,
# 2 promtool could not be installed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
PROM_DIR="${PROM_DIR:-deploy/prometheus}"
PROMTOOL="${PROMTOOL:-promtool}"
GRAFANA_DIR="${GRAFANA_DIR:-deploy/grafana}"

install_promtool() {
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "promtool-check: promtool not found and not root: install Debian's 'prometheus' package (apt-get install --no-install-recommends prometheus) or set PROMTOOL" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool-check: promtool not found and no apt-get: install promtool (Prometheus) or set PROMTOOL" >&2
    return 1
  fi
  echo "promtool-check: promtool not found; installing Debian's prometheus package (it ships /usr/bin/promtool)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq >/dev/null || { echo "promtool-check: apt-get update failed" >&2; return 1; }
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus >/dev/null \
    || { echo "promtool-check: apt-get install prometheus failed" >&2; return 1; }
}

if ! command -v "$PROMTOOL" >/dev/null 2>&1; then
  if [[ "$PROMTOOL" != promtool ]]; then
    echo "promtool-check: PROMTOOL=$PROMTOOL not found" >&2
    exit 2
  fi
  install_promtool || exit 2
  command -v promtool >/dev/null 2>&1 || { echo "promtool-check: promtool still missing after install" >&2; exit 2; }
fi
echo "promtool: $(command -v "$PROMTOOL") ($("$PROMTOOL" --version 2>&1 | head -n 1))"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
failures=()

# run NAME CMD...: CMD must succeed; its output is shown indented.
run() {
  local name="$1"; shift
  if "$@" >"$TMP/out" 2>&1; then
    passed=$((passed + 1)); printf 'PASS %s\n' "$name"
  else
    failed=$((failed + 1)); failures+=("$name"); printf 'FAIL %s\n' "$name"
  fi
  sed 's/^/     | /' "$TMP/out" | head -n 60
}

run "promtool check rules $PROM_DIR/alerts.yml" "$PROMTOOL" check rules "$PROM_DIR/alerts.yml"
run "promtool check config $PROM_DIR/prometheus.yml" "$PROMTOOL" check config "$PROM_DIR/prometheus.yml"
run "promtool test rules $PROM_DIR/alerts_test.yml" "$PROMTOOL" test rules "$PROM_DIR/alerts_test.yml"

# Every PromQL query of the Grafana dashboards must parse: each becomes a recording
# rule (Grafana's $__rate_interval/$__interval/$__range and the dashboard variables
# replaced by sample values) that `promtool check rules` parses.
if compgen -G "$GRAFANA_DIR/*.json" >/dev/null && command -v python3 >/dev/null 2>&1; then
  python3 - "$TMP/dashboard-rules.yml" "$GRAFANA_DIR"/*.json <<'PY'
import json, sys
subst = [("$__rate_interval", "1m"), ("$__interval", "1m"), ("$__range", "1h"),
         ("${peer}", "p1"), ("$peer", "p1"), ("${datasource}", "prometheus")]
lines = ["groups:"]
for f in sys.argv[2:]:
    d = json.load(open(f))
    lines += ["  - name: " + json.dumps(f), "    rules:"]
    n = 0
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels") or [])
    for p in walk(d.get("panels") or []):
        for t in p.get("targets") or []:
            e = t.get("expr") or ""
            for a, b in subst:
                e = e.replace(a, b)
            n += 1
            lines += ["      - record: dashboard_query_%d" % n,
                      "        expr: " + json.dumps(e),
                      "        labels: {panel: " + json.dumps(str(p.get("title"))) + "}"]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
  run "dashboard queries parse (promtool check rules on $GRAFANA_DIR/*.json exprs)" "$PROMTOOL" check rules "$TMP/dashboard-rules.yml"
fi

# The unit tests must cover every alert of alerts.yml (a rule without one could never
# fire, or fire on anything, unnoticed).
mapfile -t alerts < <(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\).*/\1/p' "$PROM_DIR/alerts.yml")
for alert in "${alerts[@]}"; do
  if grep -q "alertname: $alert\$" "$PROM_DIR/alerts_test.yml"; then
    passed=$((passed + 1)); printf 'PASS alerts_test.yml covers %s\n' "$alert"
  else
    failed=$((failed + 1)); failures+=("alerts_test.yml covers $alert"); printf 'FAIL alerts_test.yml covers %s\n' "$alert"
  fi
done

printf '\n'
if [[ $failed -gt 0 ]]; then
  printf 'promtool-check failed:\n'
  printf '  - %s\n' "${failures[@]}"
fi
printf 'promtool-check: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
