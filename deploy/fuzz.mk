# Fuzzing (cargo-fuzz, libFuzzer, nightly): every decoder of untrusted input we own.
# Targets live in fuzz/ (its own workspace); scripts/fuzz.sh builds and runs them.
.PHONY: fuzz fuzz-smoke

FUZZ_SECONDS ?= 60

## fuzz: every fuzz target for FUZZ_SECONDS (default 60) each; fails on a crash
fuzz:
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

## fuzz-smoke: every fuzz target for 10 s each, unoptimised build (a quick check that they build and run)
fuzz-smoke:
	@FUZZ_PROFILE=dev bash scripts/fuzz.sh 10
