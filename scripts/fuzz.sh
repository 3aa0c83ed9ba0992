#!/usr/bin/env bash
# Run every cargo-fuzz target (fuzz/fuzz_targets/*.rs) for SECONDS each (default 60),
# one after the other, and print executions and crashes per target. Exits non-zero if
# any target crashed (its input is in fuzz/artifacts/<target>/; turn it into a
# regression test beside the code or a row of the bad-input table).
#
#   scripts/fuzz.sh [SECONDS]        FUZZ_TARGETS="names hash_hex" to run a subset,
#                                    FUZZ_PROFILE=dev for a quick unoptimised build
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/fuzz"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# Release build with debug assertions: overflow and `debug_assert!` count as crashes.
# FUZZ_PROFILE=dev (the CI smoke run): unoptimised, so it builds in half the time
# (3.3 vs 6.2 min on 2 cores) and runs fewer executions; assertions are on either way.
case "${FUZZ_PROFILE:-release}" in
  release) build_flags=(--debug-assertions) ;;
  dev) build_flags=(--dev) ;;
  *) echo "fuzz: FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
esac
cargo +nightly fuzz build "${build_flags[@]}"

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
logs="$ROOT/fuzz/logs"
mkdir -p "$logs"
failed=0
summary=()
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  dict=()
  [[ -f "dict/$t.dict" ]] && dict=("-dict=dict/$t.dict")
  echo "fuzz: $t for ${SECONDS_PER_TARGET}s"
  set +e
  cargo +nightly fuzz run "${build_flags[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict[@]}" >"$logs/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  after=$(find "artifacts/$t" -type f | wc -l)
  crashes=$((after - before))
  if [[ $rc -ne 0 || $crashes -gt 0 ]]; then
    failed=1
    [[ $crashes -eq 0 ]] && crashes=1
    echo "fuzz: $t CRASHED (exit $rc); log: fuzz/logs/$t.log" >&2
    grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$logs/$t.log" | head -5 >&2 || true
  fi
  summary+=("$(printf '%-18s %12s executions  %d crashes' "$t" "${execs:-?}" "$crashes")")
done

echo
echo "fuzz summary (${SECONDS_PER_TARGET}s per target):"
printf '  %s\n' "${summary[@]}"
exit $failed
