# Benchmarks (docs/benchmarks.md): shoal put/get against nginx → curl, aria2c and a
# BitTorrent swarm on loopback, plus tracker metadata load. Results: target/bench/results.md.
.PHONY: bench bench-smoke bench-profile bench-scale

## bench: the benchmark (BENCH_SIZE_MIB=1024, BENCH_RUNS=3; release binaries)
bench:
	@bash scripts/bench.sh

## bench-smoke: every row at 64 MiB with the dev build, shorter RPC/heartbeat/small-call runs (CI; no timing assertions; fails if a row did not run)
bench-smoke:
	@BENCH_SIZE_MIB=64 BENCH_PROFILE=$${BENCH_PROFILE:-dev} \
	 BENCH_RPC_REQUESTS=$${BENCH_RPC_REQUESTS:-5000} BENCH_RPC_MAX_SECS=$${BENCH_RPC_MAX_SECS:-5} BENCH_HB_SECS=$${BENCH_HB_SECS:-4} \
	 BENCH_SMALL_FILES=$${BENCH_SMALL_FILES:-20} BENCH_SMALL_CLI=$${BENCH_SMALL_CLI:-5} BENCH_SMALL_CALLS=$${BENCH_SMALL_CALLS:-200} \
	 BENCH_COMMAND="make bench-smoke" bash scripts/bench.sh
	@target/$$( [ "$${BENCH_PROFILE:-dev}" = dev ] && echo debug || echo release )/shoal-bench scale --no-goals \
	 --peers 300 --chunks-per-peer 60 --phase-secs 3 --list-files 5000 --put-secs 3 \
	 --bin target/$$( [ "$${BENCH_PROFILE:-dev}" = dev ] && echo debug || echo release ) --out target/bench/scale-smoke.md

## bench-scale: one tracker with a real catalogue: 10,000 simulated peers × 1,000 chunks
## (10 M copies), register storm, heartbeats, memory per copy, metadata rates (docs/benchmarks.md)
bench-scale:
	$(CARGO) build --release --bins
	target/release/shoal-bench scale --bin target/release

## bench-profile: perf profile of one put and one get (SIZE_MIB=1024) into target/bench/profile/
bench-profile:
	@bash scripts/bench-profile.sh
