#!/usr/bin/env bash
# A real-browser check of the web UI: starts a throwaway cluster from the release
# binaries (tracker, three peers in zones a/a/b, webserver) on free loopback ports in a
# temp dir, stores files with the CLI and through the upload form's endpoint, then has
# headless Chromium render `/`, a search, `/peers` and a file page. Screenshots land in
# target/ui-screenshots/; the rendered DOM must contain the file names and peer zones.
# Exits non-zero on any failure; always stops what it started.
#
#   scripts/ui-check.sh            (BIN=target/release by default; builds if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$(pwd)
BIN=${BIN:-$ROOT_DIR/target/release}
OUT=${OUT:-$ROOT_DIR/target/ui-screenshots}

fail() { echo "ui-check: FAIL: $*" >&2; exit 1; }

need_bins() {
  local b
  for b in shoal shoal-tracker shoal-peer shoal-webserver; do
    [ -x "$BIN/$b" ] || return 1
  done
}
if ! need_bins; then
  echo "ui-check: building release binaries"
  cargo build --release -p shoal-tracker -p shoal-peer -p shoal-webserver -p shoal-cli
fi

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "ui-check: installing chromium (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  browser=$(command -v chromium) || fail "chromium did not install"
fi
command -v curl >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq curl >/dev/null; }

# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh  # (the script runs from the repo root)
procs_init shoal-ui
mkdir -p "$OUT"
# Small chunks so the detail page shows a real matrix; two copies of each.
start tracker SHOAL_LISTEN_ADDR=127.0.0.1:$P_TRACKER SHOAL_DATA_DIR="$TMP/tracker" \
  SHOAL_REPLICATION__FACTOR=2 SHOAL_CHUNK__MIN_BYTES=65536 "$BIN/shoal-tracker"
wait_serving 127.0.0.1:$P_TRACKER tracker
zones=(a a b); ports=($P_PEER1 $P_PEER2 $P_PEER3)
for i in 0 1 2; do
  start "peer$i" SHOAL_LISTEN_ADDR=127.0.0.1:${ports[$i]} SHOAL_DATA_DIR="$TMP/peer$i" SHOAL_ZONE=${zones[$i]} \
    SHOAL_TRACKER_URL=$TRACKER SHOAL_CAPACITY_BYTES=$((24 << 20)) "$BIN/shoal-peer"
done
for i in 0 1 2; do wait_serving 127.0.0.1:${ports[$i]} "peer$i"; done
start webserver SHOAL_LISTEN_ADDR=127.0.0.1:$P_WEB_GRPC SHOAL_HTTP_ADDR=127.0.0.1:$P_WEB_HTTP \
  SHOAL_TRACKER_URL=$TRACKER "$BIN/shoal-webserver"
wait_serving 127.0.0.1:$P_WEB_GRPC webserver
WEB=http://127.0.0.1:$P_WEB_HTTP

# Wait until the tracker sees three live peers.
for _ in $(seq 1 100); do
  [ "$("$BIN/shoal" --tracker "$TRACKER" --json info | python3 -c 'import json,sys; print(json.load(sys.stdin)["live_peers"])')" = 3 ] && break
  sleep 0.1
done

# Two files with the CLI (one with a '/', spaces and '&' in its name), one through HTTP upload.
head -c $((1536 << 10)) /dev/urandom >"$TMP/holiday.tar"
head -c $((300 << 10)) /dev/urandom >"$TMP/notes.txt"
head -c $((700 << 10)) /dev/urandom >"$TMP/upload.bin"
"$BIN/shoal" --tracker "$TRACKER" put "$TMP/holiday.tar" --name "holiday-photos.tar" >/dev/null
"$BIN/shoal" --tracker "$TRACKER" put "$TMP/notes.txt" --name "reports/2024 Q3 & notes.txt" >/dev/null
code=$(curl -sS -o /dev/null -w '%{http_code}' -F name=uploaded-via-web.bin -F "file=@$TMP/upload.bin" "$WEB/upload")
[ "$code" = 303 ] || fail "HTTP upload answered $code, expected 303"

shot() { # file url [window size]
  "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
    --screenshot="$OUT/$1" --window-size="${3:-1280,900}" "$2" >/dev/null 2>&1 || fail "screenshot of $2"
  [ -s "$OUT/$1" ] || fail "empty screenshot $OUT/$1"
}
dom() { # url → rendered DOM on stdout
  "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --dump-dom "$1" 2>/dev/null
}
expect() { # what dom needle...
  local what=$1 d=$2; shift 2
  for needle in "$@"; do
    grep -qF -- "$needle" <<<"$d" || fail "$what does not contain: $needle"
  done
}

FILE_URL="$WEB/files/reports%2F2024%20Q3%20%26%20notes.txt"
shot files.png "$WEB/"
shot search.png "$WEB/?q=report"
shot peers.png "$WEB/peers"
shot file.png "$FILE_URL"
shot file-full.png "$FILE_URL" 1280,1250
shot delete-confirm.png "$FILE_URL/delete"
shot file-large.png "$WEB/files/holiday-photos.tar"
shot not-found.png "$WEB/files/no-such-file"

d=$(dom "$WEB/")
expect "/" "$d" "holiday-photos.tar" "reports/2024 Q3 &amp; notes.txt" "uploaded-via-web.bin" "healthy" 'action="/upload"'
d=$(dom "$WEB/?q=report")
expect "/?q=report" "$d" "reports/2024 Q3 &amp; notes.txt"
grep -qF "holiday-photos.tar" <<<"$d" && fail "search for 'report' lists holiday-photos.tar"
d=$(dom "$WEB/peers")
expect "/peers" "$d" "Zone a" "Zone b" "alive" "127.0.0.1:$P_PEER1" "127.0.0.1:$P_PEER3"
d=$(dom "$FILE_URL")
expect "file page" "$d" "reports/2024 Q3 &amp; notes.txt" "zone a" "zone b" 'class="has"' "Download" "Delete"
d=$(dom "$FILE_URL/delete")
expect "delete confirmation" "$d" "Yes, delete it" "reports/2024 Q3 &amp; notes.txt"
d=$(dom "$WEB/files/no-such-file")
expect "404 page" "$d" "Not found"

echo "ui-check: OK — screenshots in $OUT:"
ls -1 "$OUT"
