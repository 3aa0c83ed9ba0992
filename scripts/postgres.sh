#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server on loopback for the tests (never a mock).
#
#   scripts/postgres.sh start DIR   install postgresql-15 if missing, initdb in DIR (owned by
#                                   the postgres user: initdb and pg_ctl refuse root), start it
#                                   on 127.0.0.1 on a free port chosen now; prints the URL
#                                   and writes it to DIR/url. TLS is on too (plain
#                                   connections still work): a self-signed certificate for
#                                   127.0.0.1/localhost signed by a throwaway CA, DIR/ca.crt
#   scripts/postgres.sh stop DIR    stop the server started in DIR (by the PID in its
#                                   postmaster.pid) and remove DIR
#
# Idempotent: `start` on a DIR with a running server prints its URL again.
set -euo pipefail

PG_MAJOR=15
BIN=/usr/lib/postgresql/$PG_MAJOR/bin

die() { echo "postgres.sh: $*" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_pg() {
  [ -x "$BIN/initdb" ] && return 0
  [ "$(id -u)" -eq 0 ] || die "postgresql-$PG_MAJOR is not installed and we are not root to install it"
  echo "postgres.sh: installing postgresql-$PG_MAJOR" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "postgresql-$PG_MAJOR" >&2
  [ -x "$BIN/initdb" ] || die "postgresql-$PG_MAJOR installed but $BIN/initdb is missing"
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
    return
  fi
  # No python3 (a bare Debian): a random high port nothing answers on.
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

start() {
  local dir=$1
  install_pg
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/url" ] && [ -f "$dir/data/postmaster.pid" ] &&
     as_pg "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    cat "$dir/url"
    return 0
  fi
  if [ "$(id -u)" -eq 0 ]; then
    # The postgres user must reach DIR: walk its parents open for traversal.
    chown postgres: "$dir"
    chmod 0755 "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  fi
  local tls=""
  if command -v openssl >/dev/null 2>&1; then
    if [ ! -f "$dir/server.crt" ]; then
      # A throwaway CA (DIR/ca.crt, what clients verify with) and a server certificate
      # for 127.0.0.1/localhost signed by it.
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=shoal test CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$dir/ext.cnf"
      openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 30 -extfile "$dir/ext.cnf" -out "$dir/server.crt" 2>/dev/null
      [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/server.key" "$dir/server.crt"
      chmod 0600 "$dir/server.key"
      chmod 0644 "$dir/server.crt" "$dir/ca.crt"
    fi
    tls="-c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key"
  fi
  local port fast=""
  port=$(free_port)
  # PG_FAST=1 (the test suite): no fsync, the data is thrown away anyway.
  [ "${PG_FAST:-0}" = 1 ] && fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  # Unix sockets in DIR (not /var/run/postgresql, which may not exist); many connections
  # because nextest runs many clusters at once, each with a few trackers.
  as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=500 $fast $tls" \
    >/dev/null || { tail -n 30 "$dir/server.log" >&2; die "server did not start"; }
  local url="postgres://postgres@127.0.0.1:$port/postgres"
  echo "$url" >"$dir/url"
  echo "$url"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  local pidfile="$dir/data/postmaster.pid"
  if [ -f "$pidfile" ]; then
    local pid
    pid=$(head -n 1 "$pidfile")
    kill -INT "$pid" 2>/dev/null || true # fast shutdown
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) [ $# -eq 2 ] || die "usage: $0 start DIR"; start "$2" ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
  *) die "usage: $0 start|stop DIR" ;;
esac
