#!/usr/bin/env bash
# Offline checks of the Helm chart (no cluster, no network):
#
#   1. helm lint --strict with the default and the production values
#   2. helm template | kubernetes-validate --strict, for every Kubernetes version
#      in K8S_VERSIONS, with the default values, values-production.yaml and a
#      few variants that switch on the other branches of the templates
#   3. helm install --dry-run=client (default and production)
#   4. bad values must be REJECTED (schema or template `fail`), each with the
#      expected message
#   5. deploy/tests/test_manifests.py (what the rendered manifests promise)
#   6. deploy/tests/test_zone_init.py (the peer zone initContainer script, run with
#      the real kubectl against a fake API server on 127.0.0.1)
#   7. deploy/tests/test_deploy.py (`make deploy`: the commit tag in the dry run, and the
#      preflight failing in under 10 s with one line, against a fake API server)
#   8. deploy/tests/test_tls_upgrade.py (tls.enabled without cert-manager: the generated
#      CA and certificates kept across upgrades, replaced when due, against a fake API server)
#
# Environment: HELM, KUBERNETES_VALIDATE, PYTHON (default: .tools/bin/*),
# CHART (helm/shoal), K8S_VERSIONS ("1.29.0 1.31.0").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
HELM="${HELM:-.tools/bin/helm}"
KUBERNETES_VALIDATE="${KUBERNETES_VALIDATE:-.tools/bin/kubernetes-validate}"
PYTHON="${PYTHON:-.tools/bin/deploy-python}"
CHART="${CHART:-helm/shoal}"
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.31.0}"
PROD_VALUES="$CHART/values-production.yaml"
RELEASE=shoal-check
NAMESPACE=shoal-check

for tool in "$HELM" "$KUBERNETES_VALIDATE" "$PYTHON"; do
  if [[ ! -x "$tool" ]] && ! command -v "$tool" >/dev/null 2>&1; then
    echo "helm-check: $tool not found; run: make -f deploy/deploy.mk deploy-tools" >&2
    exit 2
  fi
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0
failures=()

ok() { passed=$((passed + 1)); printf 'PASS %s\n' "$1"; }
ko() {
  failed=$((failed + 1)); failures+=("$1"); printf 'FAIL %s\n' "$1"
  [[ -s "$TMP/out" ]] && sed 's/^/     | /' "$TMP/out" | head -n 25
  return 0
}
section() { printf '\n== %s\n' "$1"; }

# run NAME CMD...: CMD must succeed
run() {
  local name="$1"; shift
  if "$@" >"$TMP/out" 2>&1; then ok "$name"; else ko "$name"; fi
}

# validate NAME KUBE_VERSION HELM_ARGS...: render for that version and validate strictly.
# Only CRD kinds may lack a schema: ServiceMonitor and PrometheusRule (Prometheus Operator),
# Certificate and Issuer (cert-manager); any other unknown kind fails.
validate() {
  local name="$1" kv="$2"; shift 2
  if ! "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$kv" "$@" \
      >"$TMP/manifest.yaml" 2>"$TMP/out"; then
    ko "$name: helm template"; return
  fi
  local n
  n="$(grep -c '^kind:' "$TMP/manifest.yaml")"
  if ! "$KUBERNETES_VALIDATE" --strict --quiet -k "$kv" "$TMP/manifest.yaml" >"$TMP/out" 2>&1; then
    ko "$name: kubernetes-validate --strict -k $kv ($n resources)"; return
  fi
  if grep "Couldn't find schema" "$TMP/out" | grep -Ev 'kind ((ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com|(Certificate|Issuer) with api version cert-manager.io)/v1' >"$TMP/unknown"; then
    mv "$TMP/unknown" "$TMP/out"
    ko "$name: kinds without a schema for $kv"; return
  fi
  local crds note=""
  crds="$(grep -c "Couldn't find schema" "$TMP/out" || true)"
  [[ "$crds" != "0" ]] && note=", $crds CRD resources not schema-checked"
  ok "$name: kubernetes-validate --strict -k $kv ($n resources$note)"
}

# reject NAME EXPECTED_MESSAGE HELM_ARGS...: rendering must FAIL with that message.
reject() {
  local name="$1" expect="$2"; shift 2
  if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$TMP/out" 2>&1; then
    echo "rendered although the values are invalid" >"$TMP/out"
    ko "rejects $name"
  elif ! grep -qF -- "$expect" "$TMP/out"; then
    { echo "failed, but without the expected message: $expect"; cat "$TMP/out"; } >"$TMP/out2"; mv "$TMP/out2" "$TMP/out"
    ko "rejects $name"
  else
    ok "rejects $name"
  fi
}

section "helm lint --strict"
run "lint (default values)" "$HELM" lint --strict "$CHART"
run "lint (values-production.yaml)" "$HELM" lint --strict "$CHART" -f "$PROD_VALUES"
run "lint (replicated tracker with store)" "$HELM" lint --strict "$CHART" \
  --set tracker.replicas=3 --set store.url=postgres://shoal:secret@db:5432/shoal
run "lint (tls, generated CA)" "$HELM" lint --strict "$CHART" --set tls.enabled=true --set tls.certManager.enabled=false
run "lint (tls, cert-manager)" "$HELM" lint --strict "$CHART" --set tls.enabled=true --set tls.certManager.enabled=true

section "helm template | kubernetes-validate --strict ($K8S_VERSIONS)"
for kv in $K8S_VERSIONS; do
  validate "default" "$kv"
  validate "production" "$kv" -f "$PROD_VALUES"
  validate "replicated tracker + store.url + auth" "$kv" \
    --set tracker.replicas=3 --set store.url=postgres://shoal:secret@db:5432/shoal --set auth.enabled=true
  validate "downwardAPI zone, LoadBalancer, no persistence, capacity" "$kv" \
    --set peer.zone.discovery=downwardAPI --set webserver.service.type=LoadBalancer \
    --set 'webserver.service.loadBalancerSourceRanges[0]=10.0.0.0/8' \
    --set tracker.persistence.enabled=false --set peer.persistence.enabled=false \
    --set peer.capacityBytes=536870912000 --set auth.enabled=true --set auth.existingSecret=shoal-tokens
  validate "fixed zone, no NetworkPolicy, digest, registry" "$kv" \
    --set peer.zone.value=eu-west-1a --set networkPolicy.enabled=false \
    --set tracker.image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
    --set global.image.registry=123456789012.dkr.ecr.eu-west-1.amazonaws.com/shoal \
    --set 'global.imagePullSecrets[0]=regcred'
  validate "backup CronJob to a PVC, auth" "$kv" --set backup.enabled=true --set auth.enabled=true \
    --set backup.timeZone=Europe/Paris
  validate "backup CronJob to S3 (IRSA, SSE-KMS)" "$kv" --set backup.enabled=true \
    --set backup.destination=s3 --set backup.s3.bucket=shoal-backups --set backup.s3.kmsKeyId=alias/shoal \
    --set 'backup.serviceAccount.annotations.eks\.amazonaws\.com/role-arn=arn:aws:iam::123456789012:role/b'
  validate "tls, generated CA, backup, ServiceMonitor" "$kv" --set tls.enabled=true --set backup.enabled=true \
    --set observability.serviceMonitor.enabled=true
  validate "tls, cert-manager API present" "$kv" --set tls.enabled=true --api-versions cert-manager.io/v1/Certificate
  validate "tls, cert-manager ClusterIssuer, extra names" "$kv" --set tls.enabled=true --set tls.certManager.enabled=true \
    --set tls.certManager.issuerRef.name=corp-ca --set tls.certManager.issuerRef.kind=ClusterIssuer \
    --set 'tls.extraDnsNames[0]=tracker.example.com'
done

section "helm install --dry-run=client"
run "install --dry-run=client (default values)" \
  "$HELM" install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --dry-run=client
run "install --dry-run=client (values-production.yaml)" \
  "$HELM" install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --dry-run=client -f "$PROD_VALUES"
run "install --dry-run=client (tls, generated CA)" \
  "$HELM" install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --dry-run=client --set tls.enabled=true

section "values.schema.json and template guards reject bad values"
reject "negative tracker.replicas" "at '/tracker/replicas'" --set tracker.replicas=-1
reject "negative peer.replicas" "at '/peer/replicas'" --set peer.replicas=-3
reject "non-numeric webserver.replicas" "at '/webserver/replicas'" --set webserver.replicas=two
reject "replicationFactor 0" "at '/tracker/config/replicationFactor'" --set tracker.config.replicationFactor=0
reject "replicationFactor 17" "at '/tracker/config/replicationFactor'" --set tracker.config.replicationFactor=17
reject "replicationFactor above peer.replicas" "exceeds peer.replicas" --set tracker.config.replicationFactor=5
reject "tracker.replicas 2 without a store" "at '/store" --set tracker.replicas=2
reject "unknown key under tracker" "additional properties 'bogus' not allowed" --set tracker.bogus=1
reject "misspelled peer.persistance" "additional properties 'persistance' not allowed" --set peer.persistance.size=1Gi
reject "unknown top-level key" "additional properties 'trackers' not allowed" --set trackers.replicas=1
reject "bad global.image.pullPolicy" "at '/global/image/pullPolicy'" --set global.image.pullPolicy=Sometimes
reject "bad peer.zone.discovery" "at '/peer/zone/discovery'" --set peer.zone.discovery=magic
reject "bad duration" "at '/tracker/config/liveness/heartbeat'" --set tracker.config.liveness.heartbeat=2seconds
reject "chunk.minBytes above maxBytes" "minBytes must not exceed" --set tracker.config.chunk.minBytes=134217728
reject "OTLP endpoint without scheme" "at '/observability/otlp/endpoint'" --set observability.otlp.endpoint=collector:4317
reject "non-PostgreSQL store.url" "at '/store/url'" --set store.url=mysql://db/shoal
reject "misspelled monitoring.enable" "additional properties 'enable' not allowed" --set monitoring.enable=true
reject "peer.capacityBytes 0" "at '/peer/capacityBytes'" --set peer.capacityBytes=0
reject "malformed image digest" "at '/tracker/image/digest'" --set tracker.image.digest=sha256:abc
reject "bad webserver.service.type" "at '/webserver/service/type'" --set webserver.service.type=Ingress
reject "bad whenUnsatisfiable" "at '/peer/topologySpread/zone/whenUnsatisfiable'" --set peer.topologySpread.zone.whenUnsatisfiable=Maybe
reject "bad logging.format" "at '/logging/format'" --set logging.format=xml
reject "backup to S3 without a bucket" "at '/backup/s3/bucket'" --set backup.enabled=true --set backup.destination=s3
reject "bad backup.destination" "at '/backup/destination'" --set backup.destination=ftp
reject "bad backup.schedule" "at '/backup/schedule'" --set backup.schedule=hourly
reject "backup.keep 0" "at '/backup/keep'" --set backup.keep=0
reject "webserver.uploadBufferBytes below 1 MiB" "at '/webserver/uploadBufferBytes'" --set webserver.uploadBufferBytes=1000
reject "bad persistence size" "at '/peer/persistence/size'" --set peer.persistence.size=lots
reject "bad tls.certManager.enabled" "at '/tls/certManager/enabled'" --set tls.certManager.enabled=maybe
reject "bad tls.certManager.issuerRef.kind" "at '/tls/certManager/issuerRef/kind'" \
  --set tls.certManager.issuerRef.name=x --set tls.certManager.issuerRef.kind=Vault
reject "bad tls.certManager.duration" "at '/tls/certManager/duration'" --set tls.certManager.duration=1y
reject "tls.generated.validityDays 0" "at '/tls/generated/validityDays'" --set tls.generated.validityDays=0
reject "http:// trackerPublicUrl with tls" "must be https:// with tls.enabled" --set tls.enabled=true \
  --set webserver.trackerPublicUrl=http://tracker.example.com:50052

section "Grafana dashboards"
if compgen -G "deploy/grafana/*.json" >/dev/null; then
  stale=()
  for src in deploy/grafana/*.json; do
    cmp -s "$src" "$CHART/dashboards/$(basename "$src")" || stale+=("$(basename "$src")")
  done
  if [[ ${#stale[@]} -eq 0 ]]; then
    ok "helm/shoal/dashboards/ matches deploy/grafana/"
  else
    echo "out of date: ${stale[*]} (run make -f deploy/deploy.mk helm-dashboards)" >"$TMP/out"
    ko "helm/shoal/dashboards/ matches deploy/grafana/"
  fi
else
  : >"$TMP/out"
fi
run "dashboards/*.json are valid JSON with title and panels" "$PYTHON" -c '
import json, sys
for f in sys.argv[1:]:
    d = json.load(open(f))
    assert d.get("title") and isinstance(d.get("panels"), list), f + ": no title/panels"
' "$CHART"/dashboards/*.json

section "manifest test (deploy/tests/test_manifests.py)"
if "$PYTHON" deploy/tests/test_manifests.py --helm "$HELM" --chart "$CHART" >"$TMP/manifest-test.log" 2>&1; then
  ok "manifest test: $(tail -n 1 "$TMP/manifest-test.log")"
else
  cp "$TMP/manifest-test.log" "$TMP/out"
  ko "manifest test: $(tail -n 1 "$TMP/manifest-test.log")"
fi

section "zone initContainer against a fake API server (deploy/tests/test_zone_init.py)"
if "$PYTHON" deploy/tests/test_zone_init.py --helm "$HELM" --kubectl "$(dirname "$HELM")/kubectl" >"$TMP/zone-test.log" 2>&1; then
  ok "zone init test: $(tail -n 1 "$TMP/zone-test.log")"
else
  cp "$TMP/zone-test.log" "$TMP/out"
  ko "zone init test: $(tail -n 1 "$TMP/zone-test.log")"
fi

section "make deploy: commit tag and preflight (deploy/tests/test_deploy.py)"
if "$PYTHON" deploy/tests/test_deploy.py --helm "$HELM" --kubectl "$(dirname "$HELM")/kubectl" >"$TMP/deploy-test.log" 2>&1; then
  ok "deploy test: $(tail -n 1 "$TMP/deploy-test.log")"
else
  cp "$TMP/deploy-test.log" "$TMP/out"
  ko "deploy test: $(tail -n 1 "$TMP/deploy-test.log")"
fi

section "generated TLS certificates across upgrades (deploy/tests/test_tls_upgrade.py)"
if "$PYTHON" deploy/tests/test_tls_upgrade.py --helm "$HELM" --chart "$CHART" >"$TMP/tls-test.log" 2>&1; then
  ok "tls upgrade test: $(tail -n 1 "$TMP/tls-test.log")"
else
  cp "$TMP/tls-test.log" "$TMP/out"
  ko "tls upgrade test: $(tail -n 1 "$TMP/tls-test.log")"
fi

printf '\n'
if [[ $failed -gt 0 ]]; then
  printf 'helm-check failed:\n'
  printf '  - %s\n' "${failures[@]}"
fi
printf 'helm-check: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
