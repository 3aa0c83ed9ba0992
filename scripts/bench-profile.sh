#!/usr/bin/env bash
# Where the time goes in `shoal put` and `shoal get`: a loopback cluster (tracker + 3
# peers, R=3, scrub off, from `shoal-bench cluster`), a random file of SIZE_MIB (default
# 1024), and a whole-box `perf record` (software cpu-clock event, so it works in VMs
# without a PMU) around one put and one get. Writes, under target/bench/profile/:
#   {put,get}-roles.txt   CPU samples per process (CLI, tracker, peers, kernel threads)
#   {put,get}-<role>.txt  top symbols of each process (with the kernel's share)
#   {put,get}.perf        the raw data, for `perf report -i`
# and prints the role split. Needs `perf` (Debian linux-perf); everything on 127.0.0.1.
#
#   scripts/bench-profile.sh [SIZE_MIB]     BIN=target/release by default
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-${SIZE_MIB:-1024}}
BIN=${BIN:-target/release}
OUT=target/bench/profile
FREQ=${FREQ:-999}
command -v perf >/dev/null || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq linux-perf >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
}
[ -x "$BIN/shoal-bench" ] || cargo build --release --bins
mkdir -p "$OUT" target/bench
WORK=$(mktemp -d -p target/bench profile-XXXXXX)
CLUSTER_PID=
cleanup() {
  if [ -n "$CLUSTER_PID" ] && kill -0 "$CLUSTER_PID" 2>/dev/null; then
    kill -TERM "$CLUSTER_PID"; wait "$CLUSTER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkfifo "$WORK/info"
"$BIN/shoal-bench" cluster --dir "$WORK/cluster" --bin "$BIN" --max-time 30m >"$WORK/info" 2>"$WORK/cluster.err" &
CLUSTER_PID=$!
declare -A role
while read -r line; do
  case "$line" in
    tracker=*) TRACKER=${line#tracker=} ;;
    tracker_pid=*) role[${line#tracker_pid=}]=tracker ;;
    peer_pids=*) i=1; for p in ${line#peer_pids=}; do role[$p]=peer$i; i=$((i+1)); done ;;
    ready) break ;;
  esac
done <"$WORK/info"
[ -n "${TRACKER:-}" ] || { cat "$WORK/cluster.err" >&2; exit 1; }
echo "profile: cluster at $TRACKER; writing a ${SIZE_MIB} MiB file"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/file.bin"
sync

profile() { # name, shoal args...
  local name=$1; shift
  sync
  local t0; t0=$(date +%s.%N)
  perf record -q -a -F "$FREQ" -e cpu-clock -o "$OUT/$name.perf" -- \
    bash -c 'echo $$ >"$0"; exec "$@"' "$WORK/cli.pid" "$BIN/shoal" --tracker "$TRACKER" "$@" >/dev/null
  echo "profile: $name took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s under perf"
  for p in "${!role[@]}"; do if [ "${role[$p]}" = CLI ]; then unset "role[$p]"; fi; done
  role[$(cat "$WORK/cli.pid")]=CLI
  # Per process (not per thread): samples and share of the box.
  perf script -i "$OUT/$name.perf" -F pid 2>/dev/null \
    | awk '{n[$1]++; t++} END {for (p in n) printf "%6.2f%% %s\n", 100*n[p]/t, p}' \
    | sort -rn >"$WORK/$name.pids"
  {
    echo "# $name: share of CPU samples by process (cpu-clock, whole box incl. idle, ${FREQ} Hz x 2 CPUs)"
    while read -r pct pid; do
      echo "$pct ${role[$pid]:-other} $pid $(cat /proc/"$pid"/comm 2>/dev/null)"
    done < <(head -15 "$WORK/$name.pids")
  } >"$OUT/$name-roles.txt"
  # Top symbols of each process, as a share of that process's samples.
  perf script -i "$OUT/$name.perf" -F pid,ip,sym,dso 2>/dev/null >"$WORK/$name.samples"
  for pid in "${!role[@]}"; do
    awk -v pid="$pid" '$1 == pid { $1 = ""; $2 = ""; sub(/^ +/, ""); n[$0]++; t++ }
      END { for (k in n) printf "%6.2f%%  %s\n", 100 * n[k] / t, k; if (t) printf "%6d samples\n", t }' \
      "$WORK/$name.samples" | sort -rn | head -30 >"$OUT/$name-${role[$pid]}.txt" || true
  done
  echo "== $name"; cat "$OUT/$name-roles.txt"
}

profile put put "$WORK/file.bin" --name prof --replicas 3
profile get get prof -o "$WORK/out.bin"
cmp -s "$WORK/file.bin" "$WORK/out.bin" && echo "profile: get verified" || { echo "profile: get output differs" >&2; exit 1; }
echo "profile: reports in $OUT/"
