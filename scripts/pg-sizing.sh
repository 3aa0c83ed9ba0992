#!/usr/bin/env bash
# Sizing numbers for docs/postgres.md, on a real PostgreSQL 15 with durable settings
# (fsync on): catalogue bytes per file/chunk/location, and the throughput of the writes
# a tracker makes (the batched heartbeat flush, a single-row heartbeat, a catalogue
# change). Usage: scripts/pg-sizing.sh [FILES] [CHUNKS_PER_FILE] [PEERS]
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-10000}
CHUNKS=${2:-16}
PEERS=${3:-10000}
DUR=${DUR:-10}
PGBIN=/usr/lib/postgresql/15/bin

DIR=$(mktemp -d -t shoal-pg-sizing-XXXXXX)
trap 'bash scripts/postgres.sh stop "$DIR"' EXIT
URL=$(bash scripts/postgres.sh start "$DIR")
q() { psql "$URL" -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(df -T /tmp | awk 'NR==2{print $2}') /tmp"
echo "# PostgreSQL: $(q -c 'show server_version'), fsync=$(q -c 'show fsync'), synchronous_commit=$(q -c 'show synchronous_commit')"

for f in services/tracker/migrations/*.sql; do q -f "$f"; done

# A catalogue like the tracker writes it: FILES files of CHUNKS chunks, one name each,
# 3 locations per chunk, one log entry per change (PutFile + PutName).
q <<SQL
INSERT INTO files (id, record)
SELECT md5('f'||i)||md5('F'||i),
       jsonb_build_object('id', md5('f'||i)||md5('F'||i), 'size', $CHUNKS*1048576,
         'chunk_size', 1048576, 'replicas', 3, 'created_ms', 1764000000000,
         'chunks', (SELECT jsonb_agg(md5('c'||i||'-'||k)||md5('C'||i||'-'||k)) FROM generate_series(1,$CHUNKS) k))
FROM generate_series(1,$FILES) i;
INSERT INTO names SELECT 'dir/file-'||i||'.bin', md5('f'||i)||md5('F'||i), 1764000000000 FROM generate_series(1,$FILES) i;
INSERT INTO catalogue_log (change) SELECT jsonb_build_object('PutFile', record) FROM files;
INSERT INTO catalogue_log (change) SELECT jsonb_build_object('PutName', jsonb_build_array(name, jsonb_build_object('id', id, 'created_ms', created_ms))) FROM names;
INSERT INTO peers (id, addr, zone, capacity, used)
SELECT 'peer-'||p, '10.0.'||(p/250)||'.'||(p%250)||':50053', 'zone-'||(p%3), 1099511627776, 0 FROM generate_series(0,$PEERS-1) p;
INSERT INTO locations (peer, chunk)
SELECT 'peer-'||((i*$CHUNKS+k+r*3331) % $PEERS), md5('c'||i||'-'||k)||md5('C'||i||'-'||k)
FROM generate_series(1,$FILES) i, generate_series(1,$CHUNKS) k, generate_series(0,2) r
ON CONFLICT DO NOTHING;
VACUUM ANALYZE;
SQL

echo
echo "## Catalogue size ($FILES files x $CHUNKS chunks, 3 copies each, $PEERS peers)"
echo "table | rows | total bytes (heap+index+toast) | bytes per row"
q -F ' | ' -c "SELECT t, n, pg_total_relation_size(t), pg_total_relation_size(t)/greatest(n,1)
  FROM (VALUES ('files', (SELECT count(*) FROM files)), ('names', (SELECT count(*) FROM names)),
               ('catalogue_log', (SELECT count(*) FROM catalogue_log)), ('locations', (SELECT count(*) FROM locations)),
               ('peers', (SELECT count(*) FROM peers))) v(t, n)"
echo "per file (files+names+log): $(q -c "SELECT (pg_total_relation_size('files')+pg_total_relation_size('names')+pg_total_relation_size('catalogue_log'))/$FILES") bytes"
echo "per chunk copy (locations): $(q -c "SELECT pg_total_relation_size('locations')/(SELECT count(*) FROM locations)") bytes"

# The writes, with pgbench (8 clients on 2 cores).
cat >"$DIR/hb1.sql" <<SQL
\set p random(0, $PEERS - 1)
UPDATE peers SET last_seen = now() - make_interval(secs => 0.05), capacity = 1099511627776, used = 1, active_transfers = 0 WHERE id = 'peer-' || :p;
SQL
# The tracker's batched flush: 200 peers' rows in one transaction (what 1,000 heartbeats/s
# to one replica with a 200 ms poll gives).
{
  echo "\\set p random(0, $((PEERS - 200)))"
  echo "BEGIN;"
  for k in $(seq 0 199); do
    echo "UPDATE peers SET last_seen = now() - make_interval(secs => 0.05), used = 1 WHERE id = 'peer-' || (:p + $k);"
  done
  echo "COMMIT;"
} >"$DIR/hb200.sql"
cat >"$DIR/put.sql" <<SQL
\set i random(1000000000, 2000000000)
BEGIN;
SELECT pg_advisory_xact_lock(91570032430082);
SELECT seq, change::text FROM catalogue_log WHERE seq > (SELECT max(seq) FROM catalogue_log);
INSERT INTO files (id, record) VALUES (md5('n' || :i) || md5('N' || :i), (SELECT record FROM files LIMIT 1)) ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record;
INSERT INTO catalogue_log (change) VALUES ((SELECT jsonb_build_object('PutFile', record) FROM files LIMIT 1));
INSERT INTO names (name, id, created_ms) VALUES ('new/' || :i, md5('n' || :i) || md5('N' || :i), 1) ON CONFLICT (name) DO UPDATE SET id = EXCLUDED.id;
INSERT INTO catalogue_log (change) VALUES (jsonb_build_object('PutName', 'x'));
COMMIT;
SQL
bench() { # label script
  local out
  out=$("$PGBIN/pgbench" -n -c 8 -j 2 -T "$DUR" -f "$2" "$URL" 2>&1)
  echo "$1: $(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p') tps, latency avg $(echo "$out" | sed -n 's/^latency average = //p')"
}
echo
echo "## Write throughput (pgbench, 8 clients, ${DUR}s each)"
bench "heartbeat, one row per transaction" "$DIR/hb1.sql"
bench "heartbeat flush, 200 rows per transaction (tps x 200 = heartbeats/s)" "$DIR/hb200.sql"
bench "catalogue change (lock, catch-up read, file+name+2 log rows)" "$DIR/put.sql"
