# shoal — the single entry point. CI calls the same targets (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
export VERSION

.PHONY: run test lint build release release-bins ui-check webserver-rss clean

## run: build release binaries and start a local cluster (tracker, 3 peers, webserver)
run: release
	@bash scripts/run-local.sh

## test: the whole test suite (starts a throwaway PostgreSQL for the store tests). The
## binaries the tests run are built in the same cargo call as the tests: one feature
## resolution (dev-dependencies add tokio's test-util, reqwest's hyper features), so
## nextest reuses every artifact instead of compiling tokio and all above it again.
test:
	$(CARGO) build --workspace --bins --tests
	CARGO=$(CARGO) bash scripts/test.sh

## lint: formatting and clippy, warnings are errors; no tracker source file over 600 lines
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash scripts/file-size.sh

build:
	$(CARGO) build --workspace

release release-bins:
	$(CARGO) build --release --bins

-include deploy/containers.mk
-include deploy/deploy.mk
-include deploy/bench.mk
-include deploy/observability.mk
-include deploy/fuzz.mk

## ui-check: real-browser check of the web UI (headless Chromium screenshots)
ui-check: release
	bash scripts/ui-check.sh

## webserver-rss: peak RSS of the webserver during a 1 GiB HTTP upload (writes ~4 GiB to /tmp)
webserver-rss: release
	bash scripts/webserver-rss.sh

clean:
	$(CARGO) clean
	rm -rf .shoal
