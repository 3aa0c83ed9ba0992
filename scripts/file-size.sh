#!/usr/bin/env bash
# Fails when a tracker source file grows past the limit: the tracker's state stays
# split into modules one can read (catalogue, peers, locations, uploads, the put path…).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${LIMIT:-600}
over=$(find services/tracker/src -name '*.rs' -print0 | xargs -0 wc -l | awk -v l="$limit" '$2 != "total" && $1 > l')
if [[ -n "$over" ]]; then
  echo "tracker source files over $limit lines (split them):" >&2
  echo "$over" >&2
  exit 1
fi
echo "every tracker source file is at most $limit lines"
