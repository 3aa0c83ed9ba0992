#!/usr/bin/env bash
# The benchmark behind `make bench` / `make bench-smoke`: installs the comparison tools
# when missing (Debian: nginx-light, aria2, mktorrent, opentracker, time, curl; apt-get,
# non-interactive), builds the binaries, then runs `shoal-bench run`, which starts a
# loopback cluster (tracker + 3 peers, R=3), nginx and a BitTorrent swarm, prints the
# markdown table and writes it to target/bench/results.md (BENCH_OUT).
#
# Everything binds to 127.0.0.1. Every process the run starts is listed by pid in
# target/bench/pids; the EXIT trap stops whatever is still alive there, by pid.
#
#   BENCH_SIZE_MIB=1024   size of the file            BENCH_RUNS=3   runs per row (median)
#   BENCH_PROFILE=release cargo profile of the binaries (dev for the CI smoke test)
#   BENCH_WAIT_QUIET=SECS first wait up to SECS for a quiet box (no rustc, < 15% busy)
#   more: `shoal-bench run --help` (BENCH_* variables)
#
# Exit status: 0 when every row ran (and verified), 1 when a row failed, 2 on set-up errors.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
PROFILE=${BENCH_PROFILE:-release}
case "$PROFILE" in
  release) BIN=target/release; build=("$CARGO" build --release --bins) ;;
  dev|debug) BIN=target/debug; build=("$CARGO" build --workspace --bins --tests) ;;  # as `make test` builds: reused in CI
  *) echo "bench: BENCH_PROFILE must be release or dev, not $PROFILE" >&2; exit 2 ;;
esac
mkdir -p target/bench
PIDFILE=target/bench/pids

stop_leftovers() {
  [ -s "$PIDFILE" ] || return 0
  local pids
  pids=$(cat "$PIDFILE")
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then
      pkill -TERM -P "$p" 2>/dev/null || true   # children of a /usr/bin/time wrapper
      kill -TERM "$p" 2>/dev/null || true
    fi
  done
  sleep 1
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then
      pkill -KILL -P "$p" 2>/dev/null || true
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  : >"$PIDFILE"
}
trap stop_leftovers EXIT
trap 'exit 130' INT TERM

# Comparison tools: command → Debian package.
declare -A pkg_of=([nginx]=nginx-light [aria2c]=aria2 [mktorrent]=mktorrent
                   [opentracker]=opentracker [/usr/bin/time]=time [curl]=curl)
missing=()
for c in "${!pkg_of[@]}"; do
  if [ "$c" = /usr/bin/time ]; then [ -x /usr/bin/time ] || missing+=("${pkg_of[$c]}")
  else command -v "$c" >/dev/null 2>&1 || missing+=("${pkg_of[$c]}"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
  else
    echo "bench: cannot install ${missing[*]} (not root or no apt-get); those rows will fail" >&2
  fi
fi

"${build[@]}"

# Busy share of the whole box (all CPUs) over 5 s, from /proc/stat.
busy_pct() {
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat); sleep 5
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); bu=y[1]-x[1]; id=y[2]-x[2];
    printf "%d", (bu+id) ? 100*bu/(bu+id) : 0}'
}
if [ -n "${BENCH_WAIT_QUIET:-}" ]; then
  # Quiet: no compiler running and the box under 15% busy (other tests, fuzzers) for 5 s.
  deadline=$((SECONDS + BENCH_WAIT_QUIET))
  while [ $SECONDS -lt $deadline ]; do
    if ! pgrep -x rustc >/dev/null && [ "$(busy_pct)" -lt 15 ]; then break; fi
    sleep 5
  done
  if pgrep -x rustc >/dev/null || [ "$(busy_pct)" -ge 15 ]; then
    echo "bench: the machine is busy (rustc running or over 15% busy); measuring anyway (see the load notes)" >&2
  fi
fi

export BENCH_PIDFILE=$PIDFILE
export BENCH_COMMAND=${BENCH_COMMAND:-"$(env | grep -E '^BENCH_(SIZE_MIB|RUNS|PROFILE)=' | sort | tr '\n' ' ')make bench"}
"$BIN/shoal-bench" run --bin "$BIN"
