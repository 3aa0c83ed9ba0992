# Shared by the scripts that start a throwaway local cluster (ui-check, webserver-rss):
# a temp dir with logs, free loopback ports, processes started by name and stopped by
# pid on exit (their last log lines shown when the script failed).
# Source it after defining `fail` and `BIN`; then call `procs_init PREFIX`.

procs_init() { # prefix for the temp dir
  TMP=$(mktemp -d -t "$1-XXXXXX")
  pids=()
  trap procs_cleanup EXIT
  trap 'exit 130' INT TERM
  mkdir -p "$TMP/logs"
  # Free ports, chosen by the OS (all bound at once, so they are distinct).
  read -r P_TRACKER P_WEB_GRPC P_WEB_HTTP P_PEER1 P_PEER2 P_PEER3 < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
  TRACKER=http://127.0.0.1:$P_TRACKER
}

procs_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] && [ -d "$TMP/logs" ]; then
    for f in "$TMP"/logs/*.log; do echo "--- $f (last lines)"; tail -n 15 "$f"; done >&2
  fi
  rm -rf "$TMP"
  exit "$rc"
}

start() { # name, env assignments..., binary
  local name=$1; shift
  env "$@" >"$TMP/logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_serving() { # addr name
  for _ in $(seq 1 300); do
    "$BIN/shoal" health "$1" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "$2 ($1) did not become SERVING"
}
