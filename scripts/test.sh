#!/usr/bin/env bash
# `make test`: the whole workspace suite (redb, plus the PostgreSQL unit and HA tests),
# then the core and replication suites again with every test cluster on PostgreSQL.
# A throwaway PostgreSQL server (scripts/postgres.sh) runs for the duration and is
# stopped by PID even when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

PGDIR=$(mktemp -d -t shoal-test-pg-XXXXXX)
trap 'bash scripts/postgres.sh stop "$PGDIR"' EXIT
SHOAL_TEST_POSTGRES_URL=$(PG_FAST=1 bash scripts/postgres.sh start "$PGDIR")
export SHOAL_TEST_POSTGRES_URL
if [ -f "$PGDIR/ca.crt" ]; then export SHOAL_TEST_POSTGRES_CA=$PGDIR/ca.crt; fi
echo "PostgreSQL for the tests: $SHOAL_TEST_POSTGRES_URL"

if $CARGO nextest --version >/dev/null 2>&1; then
  run() { $CARGO nextest run --no-fail-fast "$@"; }
  # The integration suite is one binary (services/testkit/tests/it): its modules by name.
  # Selected with --workspace, as the first pass was: `-p shoal-testkit` alone unifies
  # features differently and rebuilds tonic and everything above it (minutes in CI).
  modules() { run --workspace -E "binary_id(shoal-testkit::it) & test(/^($(IFS='|'; echo "$*"))::/)"; }
else
  run() { $CARGO test --no-fail-fast "$@"; }
  modules() { run --workspace --test it -- "${@/%/::}"; }
fi

# The model test's sequences: pinned, so a red run is the change's and replays; explore
# with SHOAL_MODEL_SEED unset in a direct `cargo nextest run -E 'test(random_sequences)'`.
export SHOAL_MODEL_SEED=${SHOAL_MODEL_SEED:-20261205}

rc=0
echo "=== workspace (redb store; PostgreSQL unit and HA tests) ==="
run --workspace || rc=1
echo "=== core and replication suites on the PostgreSQL store ==="
SHOAL_TEST_STORE=postgres modules core replication || rc=1
exit $rc
