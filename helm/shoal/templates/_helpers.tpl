{{/* ---------------------------------------------------------------- names */}}

{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix, at most 40 chars so "<fullname>-webserver-xxxxxxxxxx-xxxxx" fits in 63. */}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "shoal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<fullname>-<component>"; call with (dict "ctx" $ "component" "peer") */}}
{{- define "shoal.componentName" -}}
{{- printf "%s-%s" (include "shoal.fullname" .ctx) .component }}
{{- end }}

{{- define "shoal.peerHeadless" -}}
{{- printf "%s-peer-headless" (include "shoal.fullname" .) }}
{{- end }}

{{- define "shoal.trackerHeadless" -}}
{{- printf "%s-tracker-headless" (include "shoal.fullname" .) }}
{{- end }}

{{/* In-cluster tracker URL (the ClusterIP Service); https with tls.enabled. */}}
{{- define "shoal.trackerUrl" -}}
{{- printf "%s://%s-tracker.%s.svc.%s:50052" (include "shoal.scheme" .) (include "shoal.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "shoal.clientLabel" -}}
{{- printf "%s-client" (include "shoal.fullname" .) }}
{{- end }}

{{/* --------------------------------------------------------------- labels */}}

{{/* Recommended labels; call with (dict "ctx" $ "component" "tracker") */}}
{{- define "shoal.labels" -}}
helm.sh/chart: {{ include "shoal.chart" .ctx }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: shoal
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every pod of this release (any component). */}}
{{- define "shoal.releaseSelector" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* --------------------------------------------------------------- images */}}

{{/* call with (dict "ctx" $ "image" .Values.tracker.image) */}}
{{- define "shoal.image" -}}
{{- $g := .ctx.Values.global.image }}
{{- $registry := .image.registry | default $g.registry }}
{{- $repo := .image.repository }}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.image.tag | default $g.tag | default .ctx.Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{- define "shoal.imagePullSecrets" -}}
{{- with .Values.global.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------ service accounts */}}

{{/* call with (dict "ctx" $ "component" "peer") */}}
{{- define "shoal.serviceAccountName" -}}
{{- $sa := (index .ctx.Values .component).serviceAccount }}
{{- if $sa.create }}
{{- default (include "shoal.componentName" .) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* -------------------------------------------------------------- security */}}

{{- define "shoal.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "shoal.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* ------------------------------------------------------------ env / config */}}

{{- define "shoal.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "shoal.fullname" .)) }}
{{- end }}

{{- define "shoal.storeEnabled" -}}
{{- if or .Values.store.existingSecret .Values.store.url }}true{{ end }}
{{- end }}

{{- define "shoal.storeSecretName" -}}
{{- .Values.store.existingSecret | default (printf "%s-store" (include "shoal.fullname" .)) }}
{{- end }}

{{- define "shoal.storeSecretKey" -}}
{{- if .Values.store.existingSecret }}{{ .Values.store.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{/*
ConfigMap data (SHOAL_* and OTEL_* variables) of one component, as a YAML map.
Used by configmap.yaml and, hashed, by the pods' checksum/config annotation.
call with (dict "ctx" $ "component" "peer")
*/}}
{{- define "shoal.configData" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $c := index $v .component }}
{{- $data := dict }}
{{- $_ := set $data "RUST_LOG" $v.logging.level }}
{{- $_ := set $data "SHOAL_LOG_FORMAT" $v.logging.format }}
{{- $_ := set $data "SHOAL_DATA_DIR" "/var/lib/shoal" }}
{{- $_ := set $data "OTEL_SERVICE_NAME" (printf "shoal-%s" .component) }}
{{- if $v.observability.otlp.endpoint }}
{{- $_ := set $data "OTEL_EXPORTER_OTLP_ENDPOINT" $v.observability.otlp.endpoint }}
{{- $_ := set $data "OTEL_EXPORTER_OTLP_PROTOCOL" $v.observability.otlp.protocol }}
{{- end }}
{{- if $v.auth.enabled }}
{{- $_ := set $data "SHOAL_AUTH__REQUIRED" "true" }}
{{- $_ := set $data "SHOAL_AUTH__CLUSTER_TOKEN_FILE" "/etc/shoal/auth/cluster-token" }}
{{- $_ := set $data "SHOAL_AUTH__READ_TOKEN_FILE" "/etc/shoal/auth/read-token" }}
{{- $_ := set $data "SHOAL_AUTH__WRITE_TOKEN_FILE" "/etc/shoal/auth/write-token" }}
{{- end }}
{{- if $v.tls.enabled }}
{{- $_ := set $data "SHOAL_TLS__CERT_FILE" "/etc/shoal/tls/tls.crt" }}
{{- $_ := set $data "SHOAL_TLS__KEY_FILE" "/etc/shoal/tls/tls.key" }}
{{- $_ := set $data "SHOAL_TLS__CA_FILE" "/etc/shoal/tls/ca.crt" }}
{{- end }}
{{- if eq .component "tracker" }}
{{- $_ := set $data "SHOAL_LISTEN_ADDR" "0.0.0.0:50052" }}
{{- $_ := set $data "SHOAL_METRICS_ADDR" "0.0.0.0:9102" }}
{{- $_ := set $data "SHOAL_REPLICATION__FACTOR" ($c.config.replicationFactor | int64 | toString) }}
{{- $_ := set $data "SHOAL_CHUNK__MIN_BYTES" ($c.config.chunk.minBytes | int64 | toString) }}
{{- $_ := set $data "SHOAL_CHUNK__MAX_BYTES" ($c.config.chunk.maxBytes | int64 | toString) }}
{{- $_ := set $data "SHOAL_LIVENESS__HEARTBEAT" $c.config.liveness.heartbeat }}
{{- $_ := set $data "SHOAL_LIVENESS__SUSPECT_AFTER" $c.config.liveness.suspectAfter }}
{{- $_ := set $data "SHOAL_LIVENESS__DEAD_AFTER" $c.config.liveness.deadAfter }}
{{- if include "shoal.storeEnabled" $ctx }}
{{- $_ := set $data "SHOAL_STORE__URL_FILE" "/etc/shoal/store/url" }}
{{- end }}
{{- else if eq .component "peer" }}
{{- $_ := set $data "SHOAL_LISTEN_ADDR" "0.0.0.0:50053" }}
{{- $_ := set $data "SHOAL_METRICS_ADDR" "0.0.0.0:9103" }}
{{- $_ := set $data "SHOAL_TRACKER_URL" (include "shoal.trackerUrl" $ctx) }}
{{- $_ := set $data "SHOAL_SHUTDOWN_TIMEOUT" $c.shutdownTimeout }}
{{- if not (kindIs "invalid" $c.capacityBytes) }}
{{- $_ := set $data "SHOAL_CAPACITY_BYTES" ($c.capacityBytes | int64 | toString) }}
{{- end }}
{{- if $c.zone.value }}
{{- $_ := set $data "SHOAL_ZONE" $c.zone.value }}
{{- else if ne $c.zone.discovery "none" }}
{{- $_ := set $data "SHOAL_ZONE_FILE" "/etc/shoal/zone/zone" }}
{{- end }}
{{- else if eq .component "webserver" }}
{{- $_ := set $data "SHOAL_LISTEN_ADDR" "0.0.0.0:50051" }}
{{- $_ := set $data "SHOAL_HTTP_ADDR" "0.0.0.0:8080" }}
{{- $_ := set $data "SHOAL_TRACKER_URL" (include "shoal.trackerUrl" $ctx) }}
{{- $_ := set $data "SHOAL_TRACKER_PUBLIC_URL" ($c.trackerPublicUrl | default (include "shoal.trackerUrl" $ctx)) }}
{{- $_ := set $data "SHOAL_UPLOAD_BUFFER_BYTES" ($c.uploadBufferBytes | int64 | toString) }}
{{- end }}
{{- range $k, $val := $c.env }}
{{- $_ := set $data $k (toString $val) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
Env entries set per pod (Downward API and values that expand $(POD_NAME)).
call with (dict "ctx" $ "component" "peer")
*/}}
{{- define "shoal.podEnv" -}}
{{- $v := .ctx.Values -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- $attrs := list (printf "service.namespace=shoal") (printf "service.version=%s" .ctx.Chart.AppVersion) (printf "service.instance.id=$(POD_NAME)") (printf "k8s.namespace.name=%s" .ctx.Release.Namespace) "k8s.pod.name=$(POD_NAME)" "k8s.node.name=$(NODE_NAME)" (printf "app.kubernetes.io/instance=%s" .ctx.Release.Name) }}
{{- range $k, $val := $v.observability.otlp.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k (toString $val)) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- if eq .component "peer" }}
- name: SHOAL_ADVERTISE_ADDR
  value: {{ printf "$(POD_NAME).%s.%s.svc.%s:50053" (include "shoal.peerHeadless" .ctx) .ctx.Release.Namespace $v.clusterDomain | quote }}
{{- end }}
{{- with (index $v .component).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod annotations: config checksum, Prometheus scrape hints, user annotations.
call with (dict "ctx" $ "component" "peer" "metricsPort" 9103) */}}
{{- define "shoal.podAnnotations" -}}
checksum/config: {{ include "shoal.configData" . | sha256sum }}
{{- if and .ctx.Values.tls.enabled (not (include "shoal.tlsCertManager" .ctx)) }}
{{- /* A replaced generated certificate rolls the pods (they read it at start). */}}
checksum/tls: {{ index (include "shoal.tlsGenerated" .ctx | fromJson) .component | toJson | sha256sum }}
{{- end }}
{{- if .ctx.Values.observability.prometheusAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .metricsPort | quote }}
prometheus.io/path: /metrics
{{- if .ctx.Values.tls.enabled }}
prometheus.io/scheme: https
{{- end }}
{{- end }}
{{- with (index .ctx.Values .component).podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes/mounts shared by all components: /tmp, auth tokens. */}}
{{- define "shoal.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if .Values.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "shoal.authSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "shoal.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.auth.enabled }}
- name: auth
  mountPath: /etc/shoal/auth
  readOnly: true
{{- end }}
{{- end }}

{{/* Scheduling fields of a pod spec; call with the component's values. */}}
{{- define "shoal.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* PVC template / volume for /var/lib/shoal; call with (dict "ctx" $ "component" "peer") */}}
{{- define "shoal.volumeClaimTemplates" -}}
{{- $p := (index .ctx.Values .component).persistence }}
{{- if $p.enabled -}}
volumeClaimTemplates:
  - apiVersion: v1
    kind: PersistentVolumeClaim
    metadata:
      name: data
      labels:
        {{- include "shoal.selectorLabels" . | nindent 8 }}
      {{- with $p.annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      accessModes:
        {{- toYaml $p.accessModes | nindent 8 }}
      {{- if $p.storageClass }}
      {{- if eq "-" $p.storageClass }}
      storageClassName: ""
      {{- else }}
      storageClassName: {{ $p.storageClass | quote }}
      {{- end }}
      {{- end }}
      resources:
        requests:
          storage: {{ $p.size | quote }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------------- TLS */}}

{{/* "true" when the certificates come from cert-manager (tls.certManager.enabled true,
or auto and the cert-manager.io/v1 API is installed), else empty. */}}
{{- define "shoal.tlsCertManager" -}}
{{- $want := toString .Values.tls.certManager.enabled }}
{{- if and .Values.tls.enabled (or (eq $want "true") (and (eq $want "auto") (.Capabilities.APIVersions.Has "cert-manager.io/v1/Certificate"))) }}true{{ end }}
{{- end }}

{{/* Secret holding a component's certificate: tls.crt, tls.key, ca.crt.
call with (dict "ctx" $ "component" "peer"); component "client" is the certificate
of the chart's own clients (backup CronJob, helm test). */}}
{{- define "shoal.tlsSecretName" -}}
{{- printf "%s-%s-tls" (include "shoal.fullname" .ctx) .component }}
{{- end }}

{{- define "shoal.tlsCaSecretName" -}}
{{- printf "%s-ca-tls" (include "shoal.fullname" .) }}
{{- end }}

{{/* Every DNS name a component is dialled by, as JSON (a list): its Service under
every suffix, the per-pod names of its headless Service (peers advertise
<pod>.<fullname>-peer-headless.<ns>.svc.<clusterDomain>), localhost (probes, port-forward)
and tls.extraDnsNames. call with (dict "ctx" $ "component" "peer") */}}
{{- define "shoal.tlsDnsNames" -}}
{{- $ctx := .ctx }}
{{- $ns := $ctx.Release.Namespace }}
{{- $domain := $ctx.Values.clusterDomain }}
{{- $svc := include "shoal.componentName" . }}
{{- $names := list }}
{{- if eq .component "client" }}
{{- $names = list $svc }}
{{- else }}
{{- $names = list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns $domain) }}
{{- if has .component (list "tracker" "peer") }}
{{- $headless := printf "%s-headless.%s.svc.%s" $svc $ns $domain }}
{{- $names = concat $names (list $headless (printf "*.%s" $headless)) }}
{{- end }}
{{- $names = concat $names (list "localhost") $ctx.Values.tls.extraDnsNames }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}

{{- define "shoal.tlsIps" -}}
{{- if eq .component "client" }}[]{{ else }}["127.0.0.1"]{{ end }}
{{- end }}

{{/*
The Helm-generated CA and certificates (no cert-manager), as a dict component ->
{crt, key, ca} (base64) plus "ca" -> {crt, key}. Stable across upgrades: the live
Secrets are reused (lookup) as long as they were signed by the current CA, carry the
current names and are not in the last third of their life. Computed once per render
and kept in .Values.tls, so the Secrets and the pods' checksum/tls agree.
*/}}
{{- define "shoal.tlsGenerated" -}}
{{- if not (hasKey .Values.tls "_generated") }}
{{- $ns := .Release.Namespace }}
{{- $g := .Values.tls.generated }}
{{- $out := dict }}
{{- $live := (lookup "v1" "Secret" $ns (include "shoal.tlsCaSecretName" .)).data | default dict }}
{{- $ca := dict }}
{{- if and (get $live "tls.crt") (get $live "tls.key") }}
{{- $ca = buildCustomCert (get $live "tls.crt") (get $live "tls.key") }}
{{- else }}
{{- $ca = genCA (printf "%s-ca" (include "shoal.fullname" .)) (int $g.caValidityDays) }}
{{- end }}
{{- $caCrt := $ca.Cert | b64enc }}
{{- $_ := set $out "ca" (dict "crt" $caCrt "key" ($ca.Key | b64enc)) }}
{{- $now := now | unixEpoch | int64 }}
{{- range $component := list "tracker" "peer" "webserver" "client" }}
{{- $args := dict "ctx" $ "component" $component }}
{{- $names := include "shoal.tlsDnsNames" $args | fromJsonArray }}
{{- $ips := include "shoal.tlsIps" $args | fromJsonArray }}
{{- $namesSum := printf "%s %s" (join "," $names) (join "," $ips) | sha256sum | trunc 16 }}
{{- $old := lookup "v1" "Secret" $ns (include "shoal.tlsSecretName" $args) | default dict }}
{{- $oldData := $old.data | default dict }}
{{- $oldAnn := dig "metadata" "annotations" dict $old }}
{{- $renewAt := get $oldAnn "shoal.io/tls-renew-at" | default "0" | int64 }}
{{- if and (get $oldData "tls.crt") (get $oldData "tls.key") (eq (get $oldData "ca.crt") $caCrt) (eq (get $oldAnn "shoal.io/tls-names") $namesSum) (gt $renewAt $now) }}
{{- $_ := set $out $component (dict "crt" (get $oldData "tls.crt") "key" (get $oldData "tls.key") "ca" $caCrt "names" $namesSum "renewAt" (toString $renewAt)) }}
{{- else }}
{{- $days := int $g.validityDays }}
{{- $cert := genSignedCert (include "shoal.componentName" $args) $ips $names $days $ca }}
{{- $renewAt = add $now (div (mul $days 86400 2) 3) }}
{{- $_ := set $out $component (dict "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "ca" $caCrt "names" $namesSum "renewAt" (toString $renewAt)) }}
{{- end }}
{{- end }}
{{- $_ := set .Values.tls "_generated" $out }}
{{- end }}
{{- toJson .Values.tls._generated }}
{{- end }}

{{/* Volume with a component's certificate; call with (dict "ctx" $ "component" "peer") */}}
{{- define "shoal.tlsVolume" -}}
{{- if .ctx.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "shoal.tlsSecretName" . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{- define "shoal.tlsVolumeMount" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/shoal/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* SHOAL_TLS__* as env entries (for pods without a component ConfigMap). */}}
{{- define "shoal.tlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: SHOAL_TLS__CERT_FILE
  value: /etc/shoal/tls/tls.crt
- name: SHOAL_TLS__KEY_FILE
  value: /etc/shoal/tls/tls.key
- name: SHOAL_TLS__CA_FILE
  value: /etc/shoal/tls/ca.crt
{{- end }}
{{- end }}

{{/* http or https, for URLs, probes and scrapes of the services. */}}
{{- define "shoal.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/*
Probes of a gRPC service (tracker, peer). Native gRPC probes cannot speak TLS: with
tls.enabled the kubelet runs the image's `shoal health` against 127.0.0.1 (in the
certificate) with the pod's own certificate, without span export.
call with (dict "ctx" $ "port" 50053 "service" "shoal.v1.Peer"); without "service" for liveness
*/}}
{{- define "shoal.grpcProbe" -}}
{{- if .ctx.Values.tls.enabled }}
exec:
  command:
    - /usr/bin/env
    - OTEL_SDK_DISABLED=true
    - RUST_LOG=error
    - shoal
    - health
    - {{ printf "127.0.0.1:%d" (int .port) | quote }}
    {{- if .service }}
    - --service
    - {{ .service | quote }}
    {{- end }}
{{- else }}
grpc:
  port: {{ .port }}
  {{- if hasKey . "service" }}
  service: {{ .service | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------ validation */}}

{{- define "shoal.validate" -}}
{{- $v := .Values }}
{{- if and (gt (int $v.tracker.replicas) 1) (not (include "shoal.storeEnabled" .)) }}
{{- fail "tracker.replicas > 1 needs a shared store: set store.url or store.existingSecret" }}
{{- end }}
{{- if gt (int64 $v.tracker.config.chunk.minBytes) (int64 $v.tracker.config.chunk.maxBytes) }}
{{- fail "tracker.config.chunk.minBytes must not exceed tracker.config.chunk.maxBytes" }}
{{- end }}
{{- if gt (int $v.tracker.config.replicationFactor) (int $v.peer.replicas) }}
{{- fail (printf "tracker.config.replicationFactor (%d) exceeds peer.replicas (%d): chunks could never be fully replicated" (int $v.tracker.config.replicationFactor) (int $v.peer.replicas)) }}
{{- end }}
{{- if and $v.auth.enabled $v.auth.existingSecret (not (regexMatch "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$" $v.auth.existingSecret)) }}
{{- fail "auth.existingSecret is not a valid Secret name" }}
{{- end }}
{{- end }}
