#!/usr/bin/env bash
# A local shoal cluster on the default ports: tracker, three peers (zones a, a, b) and
# the webserver. Data under ./.shoal/, logs under ./.shoal/logs/. Ctrl-C or SIGTERM
# stops everything. Built by `make run` (release binaries in target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
ROOT=${SHOAL_ROOT:-.shoal}
mkdir -p "$ROOT/logs"
pids=()

stop() {
  trap - INT TERM EXIT
  echo "stopping shoal (${#pids[@]} processes)"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "stopped"
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

start() { # name, then env assignments, then the binary
  local name=$1; shift
  env "$@" >"$ROOT/logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_serving() { # addr name
  for _ in $(seq 1 200); do
    if "$BIN/shoal" health "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not become ready; see $ROOT/logs/$2.log" >&2
  exit 1
}

if [ -z "${SHOAL_AUTH__READ_TOKEN:-}${SHOAL_AUTH__WRITE_TOKEN:-}" ]; then
  echo "warning: authentication is off in this local cluster (anyone who reaches the ports can read and write)"
fi

if [ "${OTEL:-0}" = 1 ]; then
  # Traces of every service (and of the CLI, with the same variable) go to a local sink.
  start trace-sink SHOAL_LISTEN_ADDR=127.0.0.1:4317 SHOAL_TRACE_FILE="$ROOT/traces.jsonl" "$BIN/shoal-trace-sink"
  wait_serving 127.0.0.1:4317 trace-sink
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_BSP_SCHEDULE_DELAY=500
fi

start tracker SHOAL_LISTEN_ADDR=127.0.0.1:50052 SHOAL_DATA_DIR="$ROOT/tracker" SHOAL_METRICS_ADDR=127.0.0.1:9102 "$BIN/shoal-tracker"
wait_serving 127.0.0.1:50052 tracker
zones=(a a b)
for i in 1 2 3; do
  port=$((50052 + i))
  start "peer$i" SHOAL_LISTEN_ADDR=127.0.0.1:$port SHOAL_DATA_DIR="$ROOT/peer$i" SHOAL_ZONE="${zones[$((i-1))]}" \
    SHOAL_TRACKER_URL=http://127.0.0.1:50052 SHOAL_METRICS_ADDR=127.0.0.1:$((9102 + i)) "$BIN/shoal-peer"
done
for port in 50053 50054 50055; do wait_serving 127.0.0.1:$port "peer"; done
start webserver SHOAL_LISTEN_ADDR=127.0.0.1:50051 SHOAL_HTTP_ADDR=127.0.0.1:8080 SHOAL_TRACKER_URL=http://127.0.0.1:50052 "$BIN/shoal-webserver"
wait_serving 127.0.0.1:50051 webserver

cat <<TXT
shoal is running:
  webserver  grpc 127.0.0.1:50051   web UI http://127.0.0.1:8080/
  tracker    grpc 127.0.0.1:50052   metrics http://127.0.0.1:9102/metrics
  peers      127.0.0.1:50053 (zone a), 127.0.0.1:50054 (zone a), 127.0.0.1:50055 (zone b)
  data $ROOT/   logs $ROOT/logs/
try:  $BIN/shoal put README.md && $BIN/shoal get README.md -o /tmp/x
TXT
if [ "${OTEL:-0}" = 1 ]; then
  echo "  traces $ROOT/traces.jsonl  (export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317, then: $BIN/shoal trace README.md)"
fi
cat <<TXT
shoal ready (Ctrl-C to stop)
TXT
wait -n "${pids[@]}" || true
echo "a shoal process exited; see $ROOT/logs/" >&2
exit 1
