#!/usr/bin/env bash
# Tracing overhead: put and get throughput of one file with OTLP export off, then on
# (to a local shoal-trace-sink), same cluster shape, medians of RUNS runs.
# Usage: scripts/trace-overhead.sh [SIZE_MIB] [RUNS]   (release binaries in target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256}; RUNS=${2:-3}; BIN=target/release
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
head -c $((SIZE << 20)) /dev/urandom > "$work/file"

run_mode() { # mode: off|on → prints "put_s get_s" per run
  local mode=$1 sink tracker
  local -a env=()
  if [ "$mode" = on ]; then
    sink=$(port)
    SHOAL_LISTEN_ADDR=127.0.0.1:$sink SHOAL_TRACE_FILE="$work/$mode-traces.jsonl" "$BIN/shoal-trace-sink" >/dev/null 2>&1 & pids+=($!)
    env=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sink)
    until "$BIN/shoal" health 127.0.0.1:$sink >/dev/null 2>&1; do sleep 0.1; done
  fi
  for r in $(seq 1 "$RUNS"); do
    local d="$work/$mode-$r"; mkdir -p "$d"; tracker=$(port)
    env "${env[@]}" SHOAL_LISTEN_ADDR=127.0.0.1:$tracker SHOAL_DATA_DIR="$d/t" "$BIN/shoal-tracker" >"$d/t.log" 2>&1 & pids+=($!)
    until "$BIN/shoal" health 127.0.0.1:$tracker >/dev/null 2>&1; do sleep 0.1; done
    for i in 1 2 3; do
      local p; p=$(port)
      env "${env[@]}" SHOAL_LISTEN_ADDR=127.0.0.1:$p SHOAL_DATA_DIR="$d/p$i" SHOAL_TRACKER_URL=http://127.0.0.1:$tracker SHOAL_ZONE=z$i SHOAL_SCRUB__RATE_BYTES=0 "$BIN/shoal-peer" >"$d/p$i.log" 2>&1 & pids+=($!)
      until "$BIN/shoal" health 127.0.0.1:$p >/dev/null 2>&1; do sleep 0.1; done
    done
    local t0 t1 t2
    t0=$(date +%s.%N)
    env "${env[@]}" "$BIN/shoal" --tracker http://127.0.0.1:$tracker put "$work/file" --name f >/dev/null 2>&1
    t1=$(date +%s.%N)
    env "${env[@]}" "$BIN/shoal" --tracker http://127.0.0.1:$tracker get f -o "$d/out" >/dev/null 2>&1
    t2=$(date +%s.%N)
    cmp -s "$work/file" "$d/out" || { echo "get returned different bytes" >&2; exit 1; }
    echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t1" | bc)"
    for p in "${pids[@]: -4}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
  done
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A put get
for mode in off on; do
  out=$(run_mode "$mode")
  put[$mode]=$(echo "$out" | awk '{print $1}' | median)
  get[$mode]=$(echo "$out" | awk '{print $2}' | median)
done
mbs() { echo "scale=0; $SIZE * 1.048576 / $1" | bc; }
echo "| export | put s | put MB/s | get s | get MB/s |"
echo "|---|---|---|---|---|"
for mode in off on; do echo "| $mode | ${put[$mode]} | $(mbs "${put[$mode]}") | ${get[$mode]} | $(mbs "${get[$mode]}") |"; done
echo "put overhead: $(echo "scale=1; (${put[on]} - ${put[off]}) * 100 / ${put[off]}" | bc)%   get overhead: $(echo "scale=1; (${get[on]} - ${get[off]}) * 100 / ${get[off]}" | bc)%"
