#!/usr/bin/env bash
# Memory of the webserver under a big upload: starts a throwaway release cluster on free
# loopback ports (tracker, three peers in zones a/a/b, webserver), uploads a SIZE_MIB
# (default 1024) file through HTTP multipart with curl, then downloads it back over HTTP,
# sampling the webserver's VmRSS (and VmHWM, the kernel's peak) from /proc during and
# after. Prints the peak in MiB and fails when it is above LIMIT_MIB (default 100), when
# the upload is not answered 303, or when the bytes that come back differ.
#
#   scripts/webserver-rss.sh            (BIN=target/release by default; builds if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$(pwd)
BIN=${BIN:-$ROOT_DIR/target/release}
SIZE_MIB=${SIZE_MIB:-1024}
LIMIT_MIB=${LIMIT_MIB:-100}

fail() { echo "webserver-rss: FAIL: $*" >&2; exit 1; }

for b in shoal shoal-tracker shoal-peer shoal-webserver; do
  if [ ! -x "$BIN/$b" ]; then
    cargo build --release -p shoal-tracker -p shoal-peer -p shoal-webserver -p shoal-cli
    break
  fi
done
command -v curl >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq curl >/dev/null; }

# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh  # (the script runs from the repo root)
procs_init shoal-rss

start tracker SHOAL_LISTEN_ADDR=127.0.0.1:$P_TRACKER SHOAL_DATA_DIR="$TMP/tracker" SHOAL_REPLICATION__FACTOR=2 "$BIN/shoal-tracker"
wait_serving 127.0.0.1:$P_TRACKER tracker
zones=(a a b); ports=($P_PEER1 $P_PEER2 $P_PEER3)
for i in 0 1 2; do
  start "peer$i" SHOAL_LISTEN_ADDR=127.0.0.1:${ports[$i]} SHOAL_DATA_DIR="$TMP/peer$i" SHOAL_ZONE=${zones[$i]} \
    SHOAL_TRACKER_URL=$TRACKER "$BIN/shoal-peer"
done
for i in 0 1 2; do wait_serving 127.0.0.1:${ports[$i]} "peer$i"; done
start webserver SHOAL_LISTEN_ADDR=127.0.0.1:$P_WEB_GRPC SHOAL_HTTP_ADDR=127.0.0.1:$P_WEB_HTTP \
  SHOAL_TRACKER_URL=$TRACKER "$BIN/shoal-webserver"
WS_PID=${pids[-1]}
wait_serving 127.0.0.1:$P_WEB_GRPC webserver
WEB=http://127.0.0.1:$P_WEB_HTTP

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$WS_PID/status" 2>/dev/null || echo 0; }
peak_kib=0
sample_while() { # pid: sample VmRSS until it exits (and a second after)
  local until_pid=$1 r
  while kill -0 "$until_pid" 2>/dev/null; do
    r=$(kib VmRSS); [ "${r:-0}" -gt "$peak_kib" ] && peak_kib=$r
    sleep 0.05
  done
  for _ in $(seq 1 20); do
    r=$(kib VmRSS); [ "${r:-0}" -gt "$peak_kib" ] && peak_kib=$r
    sleep 0.05
  done
}
mib() { echo $(( ($1 + 1023) / 1024 )); }

echo "webserver-rss: writing a ${SIZE_MIB} MiB random file"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$TMP/big.bin"
echo "webserver-rss: idle webserver RSS $(mib "$(kib VmRSS)") MiB"

echo "webserver-rss: uploading through HTTP multipart"
start_s=$(date +%s.%N)
curl -sS -o "$TMP/upload.out" -w '%{http_code}' -F name=big.bin -F "file=@$TMP/big.bin" "$WEB/upload" >"$TMP/upload.code" &
curl_pid=$!
sample_while "$curl_pid"
wait "$curl_pid" || fail "curl upload failed"
code=$(cat "$TMP/upload.code")
[ "$code" = 303 ] || fail "upload answered $code: $(cat "$TMP/upload.out")"
up_s=$(echo "$(date +%s.%N) - $start_s" | bc 2>/dev/null || echo "?")
upload_peak=$peak_kib
echo "webserver-rss: upload done in ${up_s}s; peak VmRSS during upload $(mib "$upload_peak") MiB"

echo "webserver-rss: downloading back through HTTP"
peak_kib=0
curl -sS -o "$TMP/back.bin" -w '%{http_code}' "$WEB/download/big.bin" >"$TMP/download.code" &
curl_pid=$!
sample_while "$curl_pid"
wait "$curl_pid" || fail "curl download failed"
[ "$(cat "$TMP/download.code")" = 200 ] || fail "download answered $(cat "$TMP/download.code")"
download_peak=$peak_kib
echo "webserver-rss: peak VmRSS during download $(mib "$download_peak") MiB"
cmp -s "$TMP/big.bin" "$TMP/back.bin" || fail "downloaded bytes differ from the upload"

hwm=$(kib VmHWM)
echo "webserver-rss: after: VmRSS $(mib "$(kib VmRSS)") MiB, VmHWM (peak over the whole run) $(mib "$hwm") MiB"
peak=$(mib "$hwm")
echo "PEAK_RSS_MIB=$peak (limit $LIMIT_MIB)"
[ "$peak" -le "$LIMIT_MIB" ] || fail "webserver peak RSS $peak MiB is above $LIMIT_MIB MiB"
echo "webserver-rss: OK"
