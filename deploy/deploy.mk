# Kubernetes / AWS deployment targets (docs/deploy.md).
#
# Included from the top-level Makefile:
#
#     include deploy/deploy.mk
#
# or used alone from the repository root:
#
#     make -f deploy/deploy.mk helm-check tf-check deploy DRY_RUN=1
#
# All paths are relative to the repository root (run make there).
#
# Targets:
#   deploy-tools   install helm, kubectl, kubernetes-validate, checkov, python-hcl2 into .tools/
#   helm-check     offline chart checks: lint, kubernetes-validate (2 versions), dry-run install,
#                  schema rejects bad values, manifest test, generated TLS certificates across upgrades
#   tf-check       offline Terraform checks: terraform fmt (if installed), checkov, python-hcl2 tests
#   deploy         make images, tag + push to REGISTRY, helm upgrade --install into the current context
#                  DRY_RUN=1: lint + template | kubernetes-validate + install --dry-run=client, no images
#   deploy-images  make images, tag + push to REGISTRY (no helm)
#   helm-test      helm test of the installed release (health + put/get)
#   tf-plan        terraform init + plan into deploy/terraform/aws/tfplan
#   tf-apply       apply that plan (or plan-and-apply interactively when there is none)
#   deploy-checks  helm-check + tf-check
#   helm-dashboards copy deploy/grafana/*.json into helm/shoal/dashboards/ (helm-check compares them)

VERSION ?= 0.1.0
# Tag deployed (default: VERSION-gCOMMIT, plus -dirty-HASH for uncommitted changes).
IMAGE_TAG ?=
REGISTRY ?=
NAMESPACE ?= shoal
RELEASE ?= shoal
# Extra values files (space separated), e.g. VALUES=helm/shoal/values-production.yaml
VALUES ?=
# Extra --set assignments (space separated), e.g. HELM_SET="webserver.replicas=3"
HELM_SET ?=
KUBE_CONTEXT ?=
KIND_CLUSTER ?=
DRY_RUN ?=
# Skip `make images` (deploy images that are already built and tagged shoal-<service>:$(VERSION)).
SKIP_IMAGES ?=
IMAGES_TARGET ?= images
K8S_VERSIONS ?= 1.29.0 1.31.0

TOOLS_DIR ?= .tools
HELM ?= $(TOOLS_DIR)/bin/helm
KUBERNETES_VALIDATE ?= $(TOOLS_DIR)/bin/kubernetes-validate
CHECKOV ?= $(TOOLS_DIR)/bin/checkov
DEPLOY_PYTHON ?= $(TOOLS_DIR)/bin/deploy-python
TERRAFORM ?= terraform
DOCKER ?= docker
TF_DIR ?= deploy/terraform/aws
# Extra terraform plan/apply arguments, e.g. TF_ARGS="-var-file=prod.tfvars -var install_chart=false"
TF_ARGS ?=
TF_PLAN ?= tfplan

DEPLOY_ENV = VERSION='$(VERSION)' IMAGE_TAG='$(IMAGE_TAG)' REGISTRY='$(REGISTRY)' NAMESPACE='$(NAMESPACE)' RELEASE='$(RELEASE)' \
  VALUES='$(VALUES)' HELM_SET='$(HELM_SET)' KUBE_CONTEXT='$(KUBE_CONTEXT)' KIND_CLUSTER='$(KIND_CLUSTER)' \
  HELM='$(HELM)' KUBERNETES_VALIDATE='$(KUBERNETES_VALIDATE)' K8S_VERSIONS='$(K8S_VERSIONS)' DOCKER='$(DOCKER)'
CHECK_ENV = HELM='$(HELM)' KUBERNETES_VALIDATE='$(KUBERNETES_VALIDATE)' CHECKOV='$(CHECKOV)' \
  PYTHON='$(DEPLOY_PYTHON)' TERRAFORM='$(TERRAFORM)' TF_DIR='$(TF_DIR)' K8S_VERSIONS='$(K8S_VERSIONS)'

.PHONY: deploy-tools helm-check tf-check deploy-checks deploy deploy-images deploy-build-images deploy-preflight \
        helm-test helm-dashboards tf-init tf-plan tf-apply

## deploy-tools: pinned helm/kubectl, kubernetes-validate, python-hcl2, checkov into .tools/ (idempotent)
deploy-tools:
	@TOOLS_DIR='$(TOOLS_DIR)' bash deploy/scripts/install-tools.sh

## helm-check: all offline chart checks (no cluster needed)
helm-check: deploy-tools
	@$(CHECK_ENV) bash deploy/scripts/helm-check.sh

## tf-check: terraform fmt (when installed), checkov, python-hcl2 structure tests (offline)
tf-check: deploy-tools
	@$(CHECK_ENV) bash deploy/scripts/tf-check.sh

## deploy-checks: helm-check and tf-check
deploy-checks: helm-check tf-check

# `make images` comes from the top-level Makefile (deploy/containers.mk); it
# builds shoal-{tracker,peer,webserver}:$(VERSION).
deploy-build-images:
ifeq ($(strip $(SKIP_IMAGES)),)
	$(MAKE) $(IMAGES_TARGET) VERSION=$(VERSION)
else
	@echo "[deploy] SKIP_IMAGES set: using the existing shoal-<service>:$(VERSION) images"
endif

## deploy: build images, push them to REGISTRY (if set), helm upgrade --install; DRY_RUN=1 validates only
ifeq ($(strip $(DRY_RUN)),)
deploy: deploy-tools deploy-preflight deploy-build-images
	@$(DEPLOY_ENV) bash deploy/scripts/deploy.sh
else
deploy: deploy-tools
	@$(DEPLOY_ENV) bash deploy/scripts/deploy.sh --dry-run
endif

## deploy-preflight: cluster reachable, REGISTRY (or KIND_CLUSTER) set, node architecture = this machine's (< 10 s)
deploy-preflight: deploy-tools
	@$(DEPLOY_ENV) bash deploy/scripts/deploy.sh --preflight

## deploy-images: build images and push them to REGISTRY (no helm)
deploy-images: deploy-build-images
	@$(DEPLOY_ENV) bash deploy/scripts/deploy.sh --images-only

## helm-dashboards: copy the Grafana dashboards (deploy/grafana/*.json) into the chart
helm-dashboards:
	@if ls deploy/grafana/*.json >/dev/null 2>&1; then \
	  cp -v deploy/grafana/*.json helm/shoal/dashboards/; \
	else echo "no deploy/grafana/*.json yet"; fi

## helm-test: run the chart's test pod against the installed release
helm-test: deploy-tools
	$(HELM) test $(RELEASE) --namespace $(NAMESPACE) $(if $(KUBE_CONTEXT),--kube-context $(KUBE_CONTEXT)) --logs

## tf-init: terraform init (downloads providers and modules; needs network)
tf-init:
	$(TERRAFORM) -chdir=$(TF_DIR) init -input=false

## tf-plan: terraform plan into $(TF_DIR)/$(TF_PLAN)
tf-plan: tf-init
	$(TERRAFORM) -chdir=$(TF_DIR) plan -input=false -out=$(TF_PLAN) $(TF_ARGS)

## tf-apply: apply the saved plan (from tf-plan); without one, plan and ask for confirmation
tf-apply:
	@if [ -f "$(TF_DIR)/$(TF_PLAN)" ]; then \
	  echo "$(TERRAFORM) -chdir=$(TF_DIR) apply -input=false $(TF_PLAN)"; \
	  $(TERRAFORM) -chdir=$(TF_DIR) apply -input=false $(TF_PLAN) && rm -f "$(TF_DIR)/$(TF_PLAN)"; \
	else \
	  $(MAKE) -f deploy/deploy.mk tf-init TERRAFORM='$(TERRAFORM)' TF_DIR='$(TF_DIR)' && \
	  $(TERRAFORM) -chdir=$(TF_DIR) apply $(TF_ARGS); \
	fi
