#!/usr/bin/env python3
"""Render the shoal Helm chart and check what it promises.

    deploy/tests/test_manifests.py [--helm .tools/bin/helm] [--chart helm/shoal]

Renders the chart with `helm template` for several value sets (defaults,
values-production.yaml, and a few focused variants) and asserts, among others:
probes on every container, non-root / read-only root / no capabilities, PVCs on
tracker and peer, enableServiceLinks: false on every pod, zone spreading of
peers, PDBs, NetworkPolicies, the config checksum (and that it changes with the
config), the Kubernetes recommended labels, the peer advertise address, the
ServiceMonitor only when enabled, the PrometheusRule (the alert rules with this
release's job names), Grafana dashboards, the helm test pod, and tls.enabled:
SHOAL_TLS__* files mounted from the release's Secrets in every shoal container,
https URLs, probes that speak TLS, certificates valid for every name the chart
dials (mutual handshakes in memory for the Helm-generated ones; dnsNames of the
cert-manager Certificates), and nothing of it with TLS off.

Needs PyYAML (the deploy venv from deploy/scripts/install-tools.sh has it).
Prints one line per check and a closing "N passed, N failed"; exits 1 when
anything failed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import yaml

import tlscheck

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = "ci"
NAMESPACE = "shoal-ci"
FULL = "ci-shoal"
RECOMMENDED = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
]
GRPC_PORT = {"tracker": 50052, "peer": 50053, "webserver": 50051}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
TLS_ENV = ("SHOAL_TLS__CERT_FILE", "SHOAL_TLS__KEY_FILE", "SHOAL_TLS__CA_FILE")
# Which certificate each pod presents: its service's, or the chart's client certificate.
TLS_IDENTITY = {"tracker": "tracker", "peer": "peer", "webserver": "webserver", "backup": "client", "test": "client"}
PORT_COMPONENT = {port: comp for comp, port in GRPC_PORT.items()}


# --------------------------------------------------------------------------- rendering

@dataclass
class Render:
    name: str
    docs: list[dict]
    args: list[str] = field(default_factory=list)
    tls: bool = False  # rendered with tls.enabled
    namespace: str = NAMESPACE

    def kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict | None:
        for d in self.docs:
            if d.get("kind") == kind and d["metadata"]["name"] == name:
                return d
        return None

    def workloads(self) -> list[dict]:
        """Long-running workloads (pod template at spec.template); CronJobs are separate."""
        return [d for d in self.docs if d.get("kind") in WORKLOAD_KINDS and d["kind"] != "CronJob"]

    def cronjobs(self) -> list[dict]:
        return self.kind("CronJob")

    def test_pods(self) -> list[dict]:
        return [d for d in self.kind("Pod")
                if "test" in (d["metadata"].get("annotations") or {}).get("helm.sh/hook", "")]

    def pod_specs(self) -> Iterable[tuple[str, dict, dict]]:
        """(label, pod metadata, pod spec) for every workload template and bare pod."""
        for w in self.workloads():
            t = w["spec"]["template"]
            yield f'{w["kind"]}/{w["metadata"]["name"]}', t["metadata"], t["spec"]
        for cj in self.cronjobs():
            t = cj["spec"]["jobTemplate"]["spec"]["template"]
            yield f'CronJob/{cj["metadata"]["name"]}', t["metadata"], t["spec"]
        for p in self.kind("Pod"):
            yield f'Pod/{p["metadata"]["name"]}', p["metadata"], p["spec"]


def helm_template(helm: str, chart: str, args: list[str], release: str = RELEASE,
                  namespace: str = NAMESPACE) -> list[dict]:
    cmd = [helm, "template", release, chart, "--namespace", namespace, *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --------------------------------------------------------------------------- checks

class Checker:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, fn: Callable[[], list[str] | None]) -> None:
        try:
            problems = fn() or []
        except Exception as e:  # a crash in a check is a failure of that check
            problems = [f"{type(e).__name__}: {e}"]
        if problems:
            self.failed += 1
            print(f"FAIL {name}")
            for p in problems[:20]:
                print(f"     - {p}")
            if len(problems) > 20:
                print(f"     - ... and {len(problems) - 20} more")
        else:
            self.passed += 1
            print(f"ok   {name}")


def scheme(r: Render) -> str:
    return "https" if r.tls else "http"


def component_of(meta: dict) -> str:
    return (meta.get("labels") or {}).get("app.kubernetes.io/component", "")


def containers(spec: dict, init: bool = True) -> list[dict]:
    cs = list(spec.get("containers") or [])
    if init:
        cs += spec.get("initContainers") or []
    return cs


def env_of(c: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env") or []}


def matches(selector: dict, labels: dict) -> bool:
    ml = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        k, op = expr["key"], expr["operator"]
        if op == "DoesNotExist" and k in labels:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "In" and labels.get(k) not in expr.get("values", []):
            return False
        if op == "NotIn" and labels.get(k) in expr.get("values", []):
            return False
    return True


# ---- generic promises (every render)

def c_labels(r: Render) -> list[str]:
    bad = []
    for d in r.docs:
        labels = d["metadata"].get("labels") or {}
        missing = [k for k in RECOMMENDED if not labels.get(k)]
        if missing:
            bad.append(f'{d["kind"]}/{d["metadata"]["name"]}: missing {missing}')
        elif labels["app.kubernetes.io/part-of"] != "shoal" or labels["app.kubernetes.io/managed-by"] != "Helm":
            bad.append(f'{d["kind"]}/{d["metadata"]["name"]}: part-of/managed-by wrong')
    for where, meta, _ in r.pod_specs():
        missing = [k for k in RECOMMENDED if not (meta.get("labels") or {}).get(k)]
        if missing:
            bad.append(f"{where} pod template: missing {missing}")
    return bad


def c_service_links(r: Render) -> list[str]:
    return [where for where, _, spec in r.pod_specs() if spec.get("enableServiceLinks") is not False]


def c_probes(r: Render) -> list[str]:
    bad = []
    for w in r.workloads():
        comp = component_of(w["metadata"])
        for c in containers(w["spec"]["template"]["spec"], init=False):
            where = f'{w["metadata"]["name"]}/{c["name"]}'
            for probe in ("livenessProbe", "readinessProbe"):
                if not c.get(probe):
                    bad.append(f"{where}: no {probe}")
            port = GRPC_PORT.get(comp)
            if port is None:
                continue
            live = c.get("livenessProbe") or {}
            ready = c.get("readinessProbe") or {}
            if comp == "webserver":
                # Liveness is the process alone: a tracker outage must not restart webservers.
                if live.get("httpGet", {}).get("path") != "/healthz":
                    bad.append(f"{where}: livenessProbe is not HTTP /healthz (it must not depend on the tracker)")
                if not (ready.get("grpc", {}).get("port") == port or ready.get("httpGet", {}).get("path") == "/readyz"):
                    bad.append(f"{where}: readinessProbe neither gRPC {port} nor HTTP /readyz")
                # With TLS the HTTP port serves HTTPS only.
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    get = (c.get(probe) or {}).get("httpGet")
                    if get and (get.get("scheme", "HTTP") == "HTTPS") != r.tls:
                        bad.append(f'{where}: {probe} scheme {get.get("scheme", "HTTP")} with tls {r.tls}')
            else:
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    bad += [f"{where}: {p}" for p in grpc_probe_problems(c.get(probe) or {}, port, r.tls)]
            if comp in ("tracker", "peer") and not c.get("startupProbe"):
                bad.append(f"{where}: no startupProbe")
    return bad


def grpc_probe_problems(probe: dict, port: int, tls: bool) -> list[str]:
    """A gRPC service's probe: native gRPC (plaintext); with TLS, which native gRPC
    probes cannot speak, the image's `shoal health` against 127.0.0.1:<port>."""
    if not tls:
        return [] if probe.get("grpc", {}).get("port") == port else [f"probe is not a native gRPC probe on {port}"]
    cmd = (probe.get("exec") or {}).get("command") or []
    if "grpc" in probe:
        return ["native gRPC probe with TLS on (it cannot speak TLS)"]
    if "shoal" not in cmd or cmd[cmd.index("shoal") + 1:cmd.index("shoal") + 3] != ["health", f"127.0.0.1:{port}"]:
        return [f"probe {cmd} is not `shoal health 127.0.0.1:{port}`"]
    if "OTEL_SDK_DISABLED=true" not in cmd:
        return ["probe would export a span per run (OTEL_SDK_DISABLED not set)"]
    return []


def c_security(r: Render) -> list[str]:
    bad = []
    for where, _, spec in r.pod_specs():
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            bad.append(f"{where}: pod runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            bad.append(f"{where}: pod seccompProfile is not RuntimeDefault")
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            cw = f'{where}/{c["name"]}'
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True or not uid:
                bad.append(f"{cw}: not non-root")
            if uid != 10001:
                bad.append(f"{cw}: runAsUser {uid}, want 10001")
            if sc.get("readOnlyRootFilesystem") is not True:
                bad.append(f"{cw}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                bad.append(f"{cw}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                bad.append(f"{cw}: capabilities do not drop ALL")
            if (sc.get("capabilities") or {}).get("add"):
                bad.append(f"{cw}: adds capabilities")
            if sc.get("privileged"):
                bad.append(f"{cw}: privileged")
    return bad


def c_resources(r: Render) -> list[str]:
    bad = []
    for where, _, spec in r.pod_specs():
        for c in containers(spec):
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                if not {"cpu", "memory"} <= set((res.get(kind) or {}).keys()):
                    bad.append(f'{where}/{c["name"]}: {kind} lack cpu/memory')
    return bad


def c_images(r: Render) -> list[str]:
    bad = []
    for where, _, spec in r.pod_specs():
        for c in containers(spec):
            if not re.fullmatch(r"[^\s:@]+(:[\w.-]+|@sha256:[a-f0-9]{64})", c["image"]):
                bad.append(f'{where}/{c["name"]}: image {c["image"]!r} has no tag or digest')
            if not c.get("imagePullPolicy"):
                bad.append(f'{where}/{c["name"]}: no imagePullPolicy')
    return bad


def c_persistence(r: Render) -> list[str]:
    bad = []
    for comp in ("tracker", "peer"):
        sts = r.get("StatefulSet", f"{FULL}-{comp}")
        if not sts:
            bad.append(f"no StatefulSet {FULL}-{comp}")
            continue
        vcts = {v["metadata"]["name"]: v for v in sts["spec"].get("volumeClaimTemplates") or []}
        if "data" not in vcts:
            bad.append(f"{comp}: no volumeClaimTemplate 'data'")
            continue
        if not vcts["data"]["spec"]["resources"]["requests"].get("storage"):
            bad.append(f"{comp}: PVC without a storage request")
        c = sts["spec"]["template"]["spec"]["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
        if mounts.get("data") != "/var/lib/shoal":
            bad.append(f"{comp}: data volume not mounted at /var/lib/shoal")
        vols = [v["name"] for v in sts["spec"]["template"]["spec"].get("volumes") or []]
        if "data" in vols:
            bad.append(f"{comp}: 'data' is also a pod volume (would shadow the PVC)")
    return bad


def c_peer_spread(r: Render) -> list[str]:
    sts = r.get("StatefulSet", f"{FULL}-peer")
    spec = sts["spec"]["template"]["spec"]
    tsc = spec.get("topologySpreadConstraints") or []
    keys = {t["topologyKey"]: t for t in tsc}
    bad = []
    if "topology.kubernetes.io/zone" not in keys:
        bad.append("no topologySpreadConstraint over topology.kubernetes.io/zone")
    for t in tsc:
        if not matches(t["labelSelector"], sts["spec"]["template"]["metadata"]["labels"]):
            bad.append(f'spread constraint on {t["topologyKey"]} does not select the peers')
    return bad


def c_pdbs(r: Render) -> list[str]:
    bad = []
    pdbs = r.kind("PodDisruptionBudget")
    for comp, kind in (("peer", "StatefulSet"), ("webserver", "Deployment")):
        w = r.get(kind, f"{FULL}-{comp}")
        labels = w["spec"]["template"]["metadata"]["labels"]
        hits = [p for p in pdbs if matches(p["spec"]["selector"], labels)]
        if not hits:
            bad.append(f"no PodDisruptionBudget selects the {comp} pods")
        for p in hits:
            if "maxUnavailable" not in p["spec"] and "minAvailable" not in p["spec"]:
                bad.append(f'{p["metadata"]["name"]}: neither maxUnavailable nor minAvailable')
    return bad


def c_netpol(r: Render) -> list[str]:
    bad = []
    nps = r.kind("NetworkPolicy")
    for w in r.workloads():
        labels = w["spec"]["template"]["metadata"]["labels"]
        comp = component_of(w["metadata"])
        hits = [n for n in nps if matches(n["spec"]["podSelector"], labels)]
        if not hits:
            bad.append(f'no NetworkPolicy selects {w["metadata"]["name"]}')
            continue
        ports = {p["port"] for n in hits for rule in n["spec"].get("ingress") or [] for p in rule.get("ports") or []}
        if GRPC_PORT[comp] not in ports:
            bad.append(f"{comp}: gRPC port {GRPC_PORT[comp]} not opened by any policy")
    # peers must be reachable from peers, the tracker and the webserver
    peer_np = r.get("NetworkPolicy", f"{FULL}-peer")
    if peer_np:
        grpc_rules = [rule for rule in peer_np["spec"]["ingress"] if any(p["port"] == 50053 for p in rule["ports"])]
        for comp, kind in (("peer", "StatefulSet"), ("tracker", "StatefulSet"), ("webserver", "Deployment")):
            labels = r.get(kind, f"{FULL}-{comp}")["spec"]["template"]["metadata"]["labels"]
            if not any("from" not in rule or any("podSelector" in f and "namespaceSelector" not in f
                                                 and matches(f["podSelector"], labels) for f in rule["from"])
                       for rule in grpc_rules):
                bad.append(f"peer gRPC not reachable from {comp}")
    return bad


def c_checksum(r: Render) -> list[str]:
    bad = []
    for w in r.workloads():
        ann = w["spec"]["template"]["metadata"].get("annotations") or {}
        if not re.fullmatch(r"[a-f0-9]{64}", str(ann.get("checksum/config", ""))):
            bad.append(f'{w["metadata"]["name"]}: no checksum/config annotation')
    return bad


def c_envfrom(r: Render) -> list[str]:
    bad = []
    cms = {c["metadata"]["name"]: c for c in r.kind("ConfigMap")}
    required = {
        "tracker": ["SHOAL_LISTEN_ADDR", "SHOAL_METRICS_ADDR", "SHOAL_DATA_DIR", "SHOAL_REPLICATION__FACTOR",
                    "SHOAL_CHUNK__MIN_BYTES", "SHOAL_CHUNK__MAX_BYTES", "SHOAL_LIVENESS__HEARTBEAT",
                    "SHOAL_LIVENESS__SUSPECT_AFTER", "SHOAL_LIVENESS__DEAD_AFTER", "RUST_LOG", "SHOAL_LOG_FORMAT",
                    "OTEL_SERVICE_NAME"],
        "peer": ["SHOAL_LISTEN_ADDR", "SHOAL_METRICS_ADDR", "SHOAL_DATA_DIR", "SHOAL_TRACKER_URL", "RUST_LOG",
                 "SHOAL_LOG_FORMAT", "OTEL_SERVICE_NAME"],
        "webserver": ["SHOAL_LISTEN_ADDR", "SHOAL_HTTP_ADDR", "SHOAL_TRACKER_URL", "SHOAL_TRACKER_PUBLIC_URL",
                      "RUST_LOG", "SHOAL_LOG_FORMAT", "OTEL_SERVICE_NAME"],
    }
    for w in r.workloads():
        comp = component_of(w["metadata"])
        c = w["spec"]["template"]["spec"]["containers"][0]
        refs = [e["configMapRef"]["name"] for e in c.get("envFrom") or [] if "configMapRef" in e]
        if not refs:
            bad.append(f"{comp}: no envFrom configMapRef")
            continue
        data: dict = {}
        for name in refs:
            if name not in cms:
                bad.append(f"{comp}: envFrom ConfigMap {name} is not rendered")
            else:
                data.update(cms[name].get("data") or {})
        missing = [k for k in required.get(comp, []) if k not in data]
        if missing:
            bad.append(f"{comp}: ConfigMap lacks {missing}")
        if any(not isinstance(v, str) for v in data.values()):
            bad.append(f"{comp}: non-string ConfigMap values")
        for k, v in data.items():
            if k.endswith("_BYTES") and not re.fullmatch(r"[0-9]+", v):
                bad.append(f"{comp}: {k}={v!r} is not a plain integer")
        want = f"{scheme(r)}://{FULL}-tracker.{NAMESPACE}.svc.cluster.local:50052"
        if comp in ("peer", "webserver") and data.get("SHOAL_TRACKER_URL") != want:
            bad.append(f"{comp}: SHOAL_TRACKER_URL={data.get('SHOAL_TRACKER_URL')!r}, want {want}")
    return bad


def c_peer_identity(r: Render) -> list[str]:
    bad = []
    sts = r.get("StatefulSet", f"{FULL}-peer")
    headless = r.get("Service", f"{FULL}-peer-headless")
    if not headless or headless["spec"].get("clusterIP") != "None":
        return ["no headless peer Service"]
    if sts["spec"]["serviceName"] != headless["metadata"]["name"]:
        bad.append("peer StatefulSet serviceName is not the headless Service")
    if not matches({"matchLabels": headless["spec"]["selector"]}, sts["spec"]["template"]["metadata"]["labels"]):
        bad.append("headless Service does not select the peers")
    env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
    want = f"$(POD_NAME).{FULL}-peer-headless.{NAMESPACE}.svc.cluster.local:50053"
    if env.get("SHOAL_ADVERTISE_ADDR") != want:
        bad.append(f"SHOAL_ADVERTISE_ADDR={env.get('SHOAL_ADVERTISE_ADDR')!r}, want {want}")
    names = [e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]]
    if "POD_NAME" not in names or names.index("POD_NAME") > names.index("SHOAL_ADVERTISE_ADDR"):
        bad.append("POD_NAME must be defined before SHOAL_ADVERTISE_ADDR for $(POD_NAME) to expand")
    grace = sts["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if grace < 60:
        bad.append(f"peer terminationGracePeriodSeconds {grace} < 60")
    return bad


def c_services(r: Render) -> list[str]:
    bad = []
    pods = [(meta["labels"], spec) for _, meta, spec in r.pod_specs()]
    for s in r.kind("Service"):
        sel = s["spec"].get("selector") or {}
        targets = [spec for labels, spec in pods if matches({"matchLabels": sel}, labels)]
        if not targets:
            bad.append(f'Service {s["metadata"]["name"]} selects no pod')
            continue
        named = {p["name"] for spec in targets for c in spec["containers"] for p in c.get("ports") or []}
        for p in s["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in named:
                bad.append(f'Service {s["metadata"]["name"]}: targetPort {p["targetPort"]} not a container port')
    want = {f"{FULL}-tracker": {50052, 9102}, f"{FULL}-webserver": {50051, 8080}, f"{FULL}-peer-headless": {50053}}
    for name, ports in want.items():
        s = r.get("Service", name)
        if not s:
            bad.append(f"no Service {name}")
        elif not ports <= {p["port"] for p in s["spec"]["ports"]}:
            bad.append(f"Service {name} lacks ports {ports}")
    return bad


def c_service_accounts(r: Render) -> list[str]:
    bad = []
    sas = {s["metadata"]["name"] for s in r.kind("ServiceAccount")}
    for w in r.workloads():
        spec = w["spec"]["template"]["spec"]
        if spec.get("serviceAccountName") not in sas:
            bad.append(f'{w["metadata"]["name"]}: ServiceAccount {spec.get("serviceAccountName")} not rendered')
        if spec.get("automountServiceAccountToken") is not False:
            bad.append(f'{w["metadata"]["name"]}: automountServiceAccountToken is not false')
    return bad


def c_zone_discovery(r: Render) -> list[str]:
    bad = []
    sts = r.get("StatefulSet", f"{FULL}-peer")
    spec = sts["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in spec.get("initContainers") or []}
    if "zone" not in inits:
        return ["peer has no zone initContainer"]
    peer_env = env_of(spec["containers"][0])
    cm = r.get("ConfigMap", f"{FULL}-peer-env")["data"]
    if cm.get("SHOAL_ZONE_FILE") != "/etc/shoal/zone/zone" or "SHOAL_ZONE" in cm or "SHOAL_ZONE" in peer_env:
        bad.append("peer does not read the zone from /etc/shoal/zone/zone")
    script = inits["zone"]["command"][-1]
    if "/etc/shoal/zone/zone" not in script or "kubectl get node" not in script:
        bad.append("zone initContainer does not write the node's zone to the shared file")
    jp = env_of(inits["zone"]).get("ZONE_JSONPATH")
    if jp != r"{.metadata.labels.topology\.kubernetes\.io/zone}":
        bad.append(f"ZONE_JSONPATH {jp!r}")
    mounts = {m["name"]: m["mountPath"] for m in inits["zone"]["volumeMounts"]}
    if mounts.get("kube-api") != "/var/run/secrets/kubernetes.io/serviceaccount":
        bad.append("zone initContainer has no API token")
    if "kube-api" in {m["name"] for m in spec["containers"][0]["volumeMounts"]}:
        bad.append("the peer container itself mounts the API token")
    sa = spec["serviceAccountName"]
    roles = {c["metadata"]["name"]: c for c in r.kind("ClusterRole")}
    ok = False
    for b in r.kind("ClusterRoleBinding"):
        if any(s["kind"] == "ServiceAccount" and s["name"] == sa and s["namespace"] == NAMESPACE for s in b["subjects"]):
            role = roles.get(b["roleRef"]["name"])
            if role and any("nodes" in rule["resources"] and "get" in rule["verbs"] for rule in role["rules"]):
                ok = True
    if not ok:
        bad.append(f"no ClusterRole binding gives {sa} get on nodes")
    return bad


def c_dashboards(r: Render) -> list[str]:
    cms = [c for c in r.kind("ConfigMap") if (c["metadata"].get("labels") or {}).get("grafana_dashboard") == "1"]
    if not cms:
        return ["no ConfigMap labelled grafana_dashboard=1"]
    bad = []
    for c in cms:
        for key, text in (c.get("data") or {}).items():
            try:
                d = json.loads(text)
                if not d.get("title") or not isinstance(d.get("panels"), list):
                    bad.append(f"{key}: no title/panels")
            except json.JSONDecodeError as e:
                bad.append(f"{key}: invalid JSON: {e}")
    return bad


def c_helm_test(r: Render) -> list[str]:
    pods = r.test_pods()
    if not pods:
        return ["no helm test pod (helm.sh/hook: test)"]
    script = " ".join(" ".join(c.get("command", []) + c.get("args", [])) for p in pods for c in p["spec"]["containers"])
    bad = []
    for comp, port in GRPC_PORT.items():
        if not re.search(rf"{FULL}-{comp}[\w.-]*:{port}", script) and not re.search(rf"{FULL}-{comp}-0\.[\w.-]+:{port}", script):
            bad.append(f"test does not check the health of {comp} ({port})")
    if "shoal health" not in script:
        bad.append("test does not use `shoal health`")
    if not re.search(r"shoal .*put ", script) or not re.search(r"shoal .*get ", script):
        bad.append("test does not put and get a file with the shoal CLI")
    for p in pods:
        if p["spec"].get("restartPolicy") != "Never":
            bad.append(f'{p["metadata"]["name"]}: restartPolicy is not Never')
        if not any(c["image"].split("/")[-1].startswith("shoal-peer") for c in p["spec"]["containers"]):
            bad.append(f'{p["metadata"]["name"]}: does not use the peer image (shoal CLI)')
    return bad


def c_no_servicemonitor(r: Render) -> list[str]:
    return [f'unexpected ServiceMonitor {s["metadata"]["name"]}' for s in r.kind("ServiceMonitor")]


def c_no_prometheusrule(r: Render) -> list[str]:
    return [f'unexpected PrometheusRule {s["metadata"]["name"]}' for s in r.kind("PrometheusRule")]


def c_alerts_copy() -> list[str]:
    with open(os.path.join(ROOT, "deploy/prometheus/alerts.yml")) as f:
        src = f.read()
    with open(os.path.join(ROOT, "helm/shoal/alerts/alerts.yml")) as f:
        copy = f.read()
    return [] if src == copy else ["helm/shoal/alerts/alerts.yml differs from deploy/prometheus/alerts.yml: copy it"]


# ---- production-only promises

def c_prometheusrule(r: Render) -> list[str]:
    # The rules of deploy/prometheus/alerts.yml, their job matchers naming the jobs the
    # release's ServiceMonitors produce (the selected Service's name) in its namespace.
    prs = r.kind("PrometheusRule")
    if len(prs) != 1:
        return [f"{len(prs)} PrometheusRules, want 1"]
    pr = prs[0]
    bad = []
    if pr["apiVersion"] != "monitoring.coreos.com/v1":
        bad.append(f'apiVersion {pr["apiVersion"]}')
    with open(os.path.join(ROOT, "deploy/prometheus/alerts.yml")) as f:
        want = yaml.safe_load(f)["groups"]
    got = pr["spec"]["groups"]

    def names(groups: list[dict]) -> list:
        return [(g["name"], [x["alert"] for x in g["rules"]]) for g in groups]

    if names(got) != names(want):
        bad.append(f"groups/alerts differ from deploy/prometheus/alerts.yml: {names(got)}")
    jobs = set()
    for sm in r.kind("ServiceMonitor"):
        jobs |= {s["metadata"]["name"] for s in r.kind("Service")
                 if matches(sm["spec"]["selector"], s["metadata"]["labels"])}
    for g in got:
        for rule in g["rules"]:
            expr = rule["expr"]
            for job in re.findall(r'job="([^"]+)"', expr):
                if job not in jobs:
                    bad.append(f'{rule["alert"]}: job="{job}" is no ServiceMonitor job ({sorted(jobs)})')
            if "job=" in expr and f'namespace="{r.namespace}"' not in expr:
                bad.append(f'{rule["alert"]}: no namespace="{r.namespace}" matcher: {expr}')
    if (pr["metadata"].get("labels") or {}).get("release") != "kube-prometheus-stack":
        bad.append("monitoring.labels not on the PrometheusRule")
    return bad


def c_servicemonitor(r: Render) -> list[str]:
    sms = r.kind("ServiceMonitor")
    if len(sms) != 3:
        return [f"{len(sms)} ServiceMonitors, want 3"]
    bad = []
    for sm in sms:
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            bad.append(f'{sm["metadata"]["name"]}: apiVersion {sm["apiVersion"]}')
        svcs = [s for s in r.kind("Service") if matches(sm["spec"]["selector"], s["metadata"]["labels"])]
        if len(svcs) != 1:
            bad.append(f'{sm["metadata"]["name"]} selects {len(svcs)} Services, want 1 (no double scrape)')
            continue
        ports = {p["name"] for p in svcs[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in ports:
                bad.append(f'{sm["metadata"]["name"]}: port {ep["port"]} not on Service {svcs[0]["metadata"]["name"]}')
    return bad


def c_auth(r: Render) -> list[str]:
    bad = []
    secret = r.get("Secret", f"{FULL}-auth")
    if not secret or set(secret.get("data", {})) != {"cluster-token", "read-token", "write-token"}:
        return ["no generated auth Secret with cluster-token, read-token, write-token"]
    for w in r.workloads():
        comp = component_of(w["metadata"])
        cm = r.get("ConfigMap", f"{FULL}-{comp}-env")["data"]
        if cm.get("SHOAL_AUTH__REQUIRED") != "true":
            bad.append(f"{comp}: SHOAL_AUTH__REQUIRED is not true")
        for t in ("CLUSTER", "READ", "WRITE"):
            path = cm.get(f"SHOAL_AUTH__{t}_TOKEN_FILE", "")
            if not path.startswith("/etc/shoal/auth/"):
                bad.append(f"{comp}: SHOAL_AUTH__{t}_TOKEN_FILE not set")
        vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        if (vols.get("auth", {}).get("secret") or {}).get("secretName") != f"{FULL}-auth":
            bad.append(f"{comp}: auth Secret not mounted")
    return bad


def c_ingress(r: Render) -> list[str]:
    ing = r.kind("Ingress")
    if not ing:
        return ["no Ingress"]
    bad = []
    for i in ing:
        for rule in i["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                svc = p["backend"]["service"]
                if svc["name"] != f"{FULL}-webserver" or svc["port"].get("name") != "http":
                    bad.append(f'Ingress {i["metadata"]["name"]} does not route to the webserver UI')
        # ingress-nginx refuses bodies over 1 MiB and buffers whole uploads by default.
        ann = i["metadata"].get("annotations") or {}
        if i["spec"].get("ingressClassName") == "nginx":
            for k, want in (("nginx.ingress.kubernetes.io/proxy-body-size", "0"),
                            ("nginx.ingress.kubernetes.io/proxy-request-buffering", "off")):
                if ann.get(k) != want:
                    bad.append(f'Ingress {i["metadata"]["name"]}: {k} is {ann.get(k)!r}, not {want!r}')
    return bad


def c_zone_strict(r: Render) -> list[str]:
    sts = r.get("StatefulSet", f"{FULL}-peer")
    tsc = {t["topologyKey"]: t for t in sts["spec"]["template"]["spec"].get("topologySpreadConstraints") or []}
    z = tsc.get("topology.kubernetes.io/zone")
    return [] if z and z["whenUnsatisfiable"] == "DoNotSchedule" else ["production peers are not strictly spread over zones"]


# ---- variant promises

def c_registry(r: Render) -> list[str]:
    want = {"tracker": "reg.example.com/shoal/shoal-tracker:9.9.9",
            "peer": "reg.example.com/shoal/shoal-peer:9.9.9",
            "webserver": "reg.example.com/shoal/shoal-webserver:9.9.9"}
    bad = []
    for w in r.workloads():
        comp = component_of(w["metadata"])
        img = w["spec"]["template"]["spec"]["containers"][0]["image"]
        if img != want[comp]:
            bad.append(f"{comp}: image {img}, want {want[comp]}")
    return bad


def c_default_tag(r: Render) -> list[str]:
    with open(os.path.join(ROOT, "helm/shoal/Chart.yaml")) as f:
        app = yaml.safe_load(f)["appVersion"]
    bad = []
    for w in r.workloads():
        comp = component_of(w["metadata"])
        img = w["spec"]["template"]["spec"]["containers"][0]["image"]
        if img != f"shoal-{comp}:{app}":
            bad.append(f"{comp}: image {img}, want shoal-{comp}:{app}")
    return bad


def c_store(r: Render) -> list[str]:
    bad = []
    sts = r.get("StatefulSet", f"{FULL}-tracker")
    if sts["spec"]["replicas"] != 3:
        bad.append("tracker replicas not 3")
    cm = r.get("ConfigMap", f"{FULL}-tracker-env")["data"]
    if cm.get("SHOAL_STORE__URL_FILE") != "/etc/shoal/store/url":
        bad.append("SHOAL_STORE__URL_FILE not set")
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    sec = (vols.get("store") or {}).get("secret") or {}
    if sec.get("secretName") != "shoal-db" or sec.get("items") != [{"key": "dsn", "path": "url"}]:
        bad.append(f"store Secret not mounted as url: {sec}")
    if not any(matches(p["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
               for p in r.kind("PodDisruptionBudget")):
        bad.append("no PDB for a replicated tracker")
    if "SHOAL_STORE__URL" in cm:
        bad.append("store URL in the ConfigMap (must stay in the Secret)")
    return bad


def quantity_bytes(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"([0-9]+)([A-Za-z]*)", str(q))
    assert m, f"quantity {q!r}"
    return int(m.group(1)) * units.get(m.group(2), 1)


def c_upload_streams(r: Render) -> list[str]:
    """Web uploads stream to the peers: no spool settings or volume, only /tmp (an
    emptyDir of at most 256 MiB) is writable, and the upload buffers fit well inside
    the container's memory limit (a quarter of it at most)."""
    bad = []
    d = r.get("Deployment", f"{FULL}-webserver")
    spec = d["spec"]["template"]["spec"]
    cm = r.get("ConfigMap", f"{FULL}-webserver-env")["data"]
    for gone in ("SHOAL_UPLOAD_DIR", "SHOAL_UPLOAD_SPOOL_BYTES"):
        if gone in cm:
            bad.append(f"{gone} is set, but the webserver no longer spools uploads")
    buf = cm.get("SHOAL_UPLOAD_BUFFER_BYTES", "")
    c = spec["containers"][0]
    limit = quantity_bytes(((c.get("resources") or {}).get("limits") or {}).get("memory", "0"))
    if not buf.isdigit():
        bad.append(f"SHOAL_UPLOAD_BUFFER_BYTES={buf!r}")
    elif limit and int(buf) * 4 > limit:
        bad.append(f"upload buffers of {buf} bytes are over a quarter of the memory limit {limit}")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    for path, name in mounts.items():
        v = vols.get(name, {})
        if "emptyDir" in v and path != "/tmp":
            bad.append(f"writable emptyDir at {path}: only /tmp should be")
    tmp = vols.get(mounts.get("/tmp", ""), {}).get("emptyDir")
    if tmp is None or not (0 < quantity_bytes(tmp.get("sizeLimit", "0")) <= 256 << 20):
        bad.append(f"/tmp is not an emptyDir of at most 256Mi: {tmp}")
    if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
        bad.append("the webserver's root file system is writable")
    return bad


def c_no_backup(r: Render) -> list[str]:
    return [f'{d["kind"]}/{d["metadata"]["name"]} rendered although backup.enabled is false'
            for d in r.docs if component_of(d["metadata"]) == "backup"]


def backup_pod(r: Render) -> tuple[dict, dict]:
    cj = r.get("CronJob", f"{FULL}-backup")
    assert cj, f"no CronJob {FULL}-backup"
    t = cj["spec"]["jobTemplate"]["spec"]["template"]
    return cj, t


def c_backup_common(r: Render) -> list[str]:
    """What both destinations promise: one run at a time, bounded in time, the tracker
    image running `shoal-tracker backup` against this release's tracker with the
    cluster token, a ServiceAccount without a token, and a network path to the tracker."""
    bad = []
    cj, t = backup_pod(r)
    spec, job = cj["spec"], cj["spec"]["jobTemplate"]["spec"]
    if spec.get("concurrencyPolicy") != "Forbid":
        bad.append("concurrencyPolicy is not Forbid (two backups could overlap)")
    if not spec.get("schedule"):
        bad.append("no schedule")
    if not job.get("activeDeadlineSeconds"):
        bad.append("no activeDeadlineSeconds (a stuck backup would block every later one)")
    pod = t["spec"]
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        bad.append(f'restartPolicy {pod.get("restartPolicy")!r}')
    backup = [c for c in containers(pod) if c["name"] == "backup"]
    if len(backup) != 1:
        return bad + ["no container named backup"]
    c = backup[0]
    tracker_img = r.get("StatefulSet", f"{FULL}-tracker")["spec"]["template"]["spec"]["containers"][0]["image"]
    if c["image"] != tracker_img:
        bad.append(f'backup image {c["image"]}, want the tracker image {tracker_img}')
    script = " ".join(c.get("command") or []) + " ".join(c.get("args") or [])
    if "shoal-tracker backup" not in script:
        bad.append("the backup container does not run `shoal-tracker backup`")
    env = env_of(c)
    want = f"{scheme(r)}://{FULL}-tracker.{NAMESPACE}.svc.cluster.local:50052"
    if env.get("SHOAL_TRACKER_URL") != want:
        bad.append(f"SHOAL_TRACKER_URL={env.get('SHOAL_TRACKER_URL')!r}, want {want}")
    # Strict config: the backup command refuses SHOAL_* variables that are not tracker
    # settings; only these reach it.
    extra = [k for k in env if k.startswith("SHOAL_") and k not in ("SHOAL_TRACKER_URL", "SHOAL_AUTH__CLUSTER_TOKEN_FILE")
             and not (r.tls and k in TLS_ENV)]
    if extra:
        bad.append(f"unexpected SHOAL_ variables {extra}")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
    if mounts.get("backup") != "/backup":
        bad.append("no /backup mount")
    sas = {x["metadata"]["name"] for x in r.kind("ServiceAccount")}
    if pod.get("serviceAccountName") != f"{FULL}-backup" or f"{FULL}-backup" not in sas:
        bad.append(f'ServiceAccount {pod.get("serviceAccountName")} not rendered')
    if pod.get("automountServiceAccountToken") is not False:
        bad.append("automountServiceAccountToken is not false")
    nps = r.kind("NetworkPolicy")
    labels = t["metadata"]["labels"]
    if not any(matches(n["spec"]["podSelector"], labels) for n in nps):
        bad.append("no NetworkPolicy selects the backup pod")
    tnp = r.get("NetworkPolicy", f"{FULL}-tracker")
    if tnp and not any(any(p["port"] == 50052 for p in rule["ports"]) and
                       ("from" not in rule or any("podSelector" in f and "namespaceSelector" not in f
                                                  and matches(f["podSelector"], labels) for f in rule["from"]))
                       for rule in tnp["spec"]["ingress"]):
        bad.append("the tracker's NetworkPolicy does not admit the backup pod on 50052")
    return bad


def c_backup_volume(r: Render) -> list[str]:
    bad = []
    _, t = backup_pod(r)
    pod = t["spec"]
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    claim = (vols.get("backup", {}).get("persistentVolumeClaim") or {}).get("claimName")
    pvc = r.get("PersistentVolumeClaim", f"{FULL}-backup")
    if claim != f"{FULL}-backup" or not pvc:
        bad.append(f"backup volume is not the chart's PVC {FULL}-backup (claim {claim!r})")
    elif (pvc["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
        bad.append("the backup PVC is not kept on uninstall")
    c = pod["containers"][0]
    env = env_of(c)
    if env.get("KEEP") != "48":
        bad.append(f"KEEP={env.get('KEEP')!r}, want the default 48")
    script = c["command"][-1]
    if "catalogue-$(date -u +%Y%m%dT%H%M%SZ).backup" not in script or "tail -n +" not in script:
        bad.append("snapshots are not timestamped and pruned")
    if pod.get("initContainers"):
        bad.append("init containers with destination volume")
    # Auth on (this render): only the cluster token is mounted.
    if env.get("SHOAL_AUTH__CLUSTER_TOKEN_FILE") != "/etc/shoal/auth/cluster-token":
        bad.append("SHOAL_AUTH__CLUSTER_TOKEN_FILE not set with auth.enabled")
    items = ((vols.get("auth") or {}).get("secret") or {}).get("items")
    if items != [{"key": "cluster-token", "path": "cluster-token"}]:
        bad.append(f"auth Secret mount is not the cluster token alone: {items}")
    return bad


def c_backup_s3(r: Render) -> list[str]:
    bad = []
    _, t = backup_pod(r)
    pod = t["spec"]
    if r.get("PersistentVolumeClaim", f"{FULL}-backup"):
        bad.append("a backup PVC rendered with destination s3")
    inits = [c["name"] for c in pod.get("initContainers") or []]
    if inits != ["backup"]:
        bad.append(f"init containers {inits}, want [backup] (the snapshot before the upload)")
    up = [c for c in pod["containers"] if c["name"] == "upload"]
    if not up:
        return bad + ["no upload container"]
    c = up[0]
    if not c["image"].startswith("public.ecr.aws/aws-cli/aws-cli:"):
        bad.append(f'upload image {c["image"]}')
    env = env_of(c)
    if env.get("BUCKET") != "shoal-backups-test" or env.get("PREFIX") != "ci/catalogue":
        bad.append(f"BUCKET/PREFIX {env.get('BUCKET')!r}/{env.get('PREFIX')!r}")
    if env.get("HOME") != "/tmp":
        bad.append("HOME is not /tmp (the root filesystem is read-only)")
    script = c["command"][-1]
    if "aws s3 cp /backup/catalogue.backup" not in script or "--sse aws:kms" not in script \
            or "--sse-kms-key-id" not in script:
        bad.append("upload does not copy with SSE-KMS")
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    if "emptyDir" not in vols.get("backup", {}):
        bad.append("the snapshot scratch volume is not an emptyDir")
    sa = r.get("ServiceAccount", f"{FULL}-backup")
    arn = ((sa or {}).get("metadata", {}).get("annotations") or {}).get("eks.amazonaws.com/role-arn")
    if arn != "arn:aws:iam::123456789012:role/shoal-backup":
        bad.append(f"backup ServiceAccount IRSA annotation {arn!r}")
    return bad


def checksum_of(r: Render, comp: str) -> str:
    kind = "Deployment" if comp == "webserver" else "StatefulSet"
    return r.get(kind, f"{FULL}-{comp}")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]



# ---- TLS (tls.enabled)

def shoal_containers(r: Render) -> Iterable[tuple[str, str, dict, dict]]:
    """(where, component, pod spec, container) for every container running a shoal image."""
    for where, meta, spec in r.pod_specs():
        for c in containers(spec):
            if re.search(r"(^|/)shoal-(tracker|peer|webserver)[:@]", c["image"]):
                yield f'{where}/{c["name"]}', component_of(meta), spec, c


def full_env(r: Render, c: dict) -> dict[str, Any]:
    """The container's environment: its envFrom ConfigMaps, then env."""
    env: dict[str, Any] = {}
    for ref in c.get("envFrom") or []:
        if "configMapRef" in ref:
            cm = r.get("ConfigMap", ref["configMapRef"]["name"])
            env.update((cm or {}).get("data") or {})
    env.update(env_of(c))
    return env


def tls_sources(r: Render) -> dict[str, set[str]]:
    """Secret name -> the keys it will hold: rendered Secrets, and the secretName of
    every cert-manager Certificate (tls.crt, tls.key, ca.crt)."""
    out = {s["metadata"]["name"]: set((s.get("data") or {}) | (s.get("stringData") or {})) for s in r.kind("Secret")}
    for cert in r.kind("Certificate"):
        out.setdefault(cert["spec"]["secretName"], set()).update({"tls.crt", "tls.key", "ca.crt"})
    return out


def c_no_tls(r: Render) -> list[str]:
    """tls.enabled false renders as before: no SHOAL_TLS__*, no certificate, plain http."""
    bad = []
    for where, _, spec, c in shoal_containers(r):
        env = full_env(r, c)
        bad += [f"{where}: {k} set" for k in env if k.startswith("SHOAL_TLS__")]
        bad += [f"{where}: {k}={v}" for k, v in env.items() if isinstance(v, str) and v.startswith("https://")
                and k in ("SHOAL_TRACKER_URL",)]
        if any(v["name"] == "tls" for v in spec.get("volumes") or []):
            bad.append(f"{where}: a tls volume")
    bad += [f'{d["kind"]}/{d["metadata"]["name"]}' for d in r.docs
            if component_of(d["metadata"]) == "tls" or d["kind"] in ("Certificate", "Issuer")]
    return bad


def c_tls_wiring(r: Render) -> list[str]:
    """Every shoal container (services, backup, helm test) has SHOAL_TLS__CERT_FILE,
    KEY_FILE and CA_FILE naming files of a mounted Secret that the release provides
    (rendered, or issued by cert-manager): its service's, or the client certificate."""
    bad = []
    sources = tls_sources(r)
    seen = set()
    for where, comp, spec, c in shoal_containers(r):
        seen.add(comp)
        env = full_env(r, c)
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        mounts = {m["mountPath"].rstrip("/"): m["name"] for m in c.get("volumeMounts") or []}
        for var in TLS_ENV:
            path = env.get(var)
            if not isinstance(path, str) or not path.startswith("/"):
                bad.append(f"{where}: {var}={path!r}")
                continue
            d, key = os.path.split(path)
            vol = vols.get(mounts.get(d, ""), {})
            secret = vol.get("secret") or {}
            name = secret.get("secretName")
            want = f"{FULL}-{TLS_IDENTITY.get(comp, '?')}-tls"
            if name != want:
                bad.append(f"{where}: {var}={path} is not in a mounted Secret {want} (volume {vol.get('name')}: {name})")
                continue
            items = {i["path"]: i["key"] for i in secret.get("items") or []}
            skey = items.get(key, key) if items else key
            if items and key not in items:
                bad.append(f"{where}: {path}: the volume does not project {key}")
            if skey not in sources.get(name, set()):
                bad.append(f"{where}: {path}: Secret {name} key {skey} is not provided by the release")
    missing = {"tracker", "peer", "webserver", "test"} - seen
    if missing:
        bad.append(f"no shoal container for {sorted(missing)}")
    return bad


def c_tls_urls(r: Render) -> list[str]:
    """With TLS every URL the chart sets is https:// (the services refuse http:// then),
    and the helm test dials through it."""
    bad = []
    for where, _, _, c in shoal_containers(r):
        for k, v in full_env(r, c).items():
            if k.startswith("SHOAL_") and k.endswith(("_URL", "_URLS")) and isinstance(v, str):
                bad += [f"{where}: {k}={v}" for u in v.split(",") if not u.strip().startswith("https://")]
    return bad


def dialled(r: Render) -> list[tuple[str, str, str]]:
    """(component, DNS name or IP, where) for every name the chart makes something dial."""
    out = []
    peers = r.get("StatefulSet", f"{FULL}-peer")["spec"]["replicas"]
    for where, comp, spec, c in shoal_containers(r):
        env = full_env(r, c)
        for k in ("SHOAL_TRACKER_URL", "SHOAL_TRACKER_PUBLIC_URL"):
            for u in str(env.get(k) or "").split(","):
                m = re.match(r"\w+://([^:/]+)", u.strip())
                if m and ".svc" in m.group(1):
                    out.append(("tracker", m.group(1), f"{where} {k}"))
        adv = env.get("SHOAL_ADVERTISE_ADDR")
        if isinstance(adv, str):
            host = adv.rsplit(":", 1)[0]
            out += [("peer", host.replace("$(POD_NAME)", f"{FULL}-peer-{i}"), f"{where} SHOAL_ADVERTISE_ADDR")
                    for i in range(peers)]
        script = " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))
        # the helm test's `check <host>:<port>` (shoal health) targets
        for host, port in re.findall(r"([\w-]+(?:\.[\w-]+)+):(\d+)", script):
            if int(port) in PORT_COMPONENT:
                out.append((PORT_COMPONENT[int(port)], host, f"{where} script"))
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            cmd = ((c.get(probe) or {}).get("exec") or {}).get("command") or []
            if "health" in cmd:
                host, port = cmd[cmd.index("health") + 1].rsplit(":", 1)
                out.append((PORT_COMPONENT[int(port)], host, f"{where} {probe}"))
    for sm in r.kind("ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            name = (ep.get("tlsConfig") or {}).get("serverName")
            if name:
                out.append((component_of(sm["metadata"]), name, f'ServiceMonitor/{sm["metadata"]["name"]}'))
    return out


def c_tls_dialled(r: Render) -> list[str]:
    """The names are the ones the chart uses (tracker Service, per-pod peer names,
    127.0.0.1 for probes, the helm test's targets)."""
    got = {(comp, name) for comp, name, _ in dialled(r)}
    want = {("tracker", f"{FULL}-tracker.{NAMESPACE}.svc.cluster.local"),
            ("peer", f"{FULL}-peer-0.{FULL}-peer-headless.{NAMESPACE}.svc.cluster.local"),
            ("webserver", f"{FULL}-webserver.{NAMESPACE}.svc.cluster.local"),
            ("tracker", "127.0.0.1"), ("peer", "127.0.0.1")}
    return [f"{comp} is never dialled as {name}" for comp, name in sorted(want - got)]


def covers(sans: list[str], name: str) -> bool:
    """A certificate name matches `name`: exactly, or as a wildcard for one leftmost label."""
    for s in sans:
        if s == name or (s.startswith("*.") and "." in name and name.split(".", 1)[1] == s[2:]
                         and name.split(".", 1)[0]):
            return True
    return False


def generated_identities(r: Render) -> dict[str, tlscheck.Identity]:
    return {comp: tlscheck.Identity.from_secret(r.get("Secret", f"{FULL}-{comp}-tls"))
            for comp in ("tracker", "peer", "webserver", "client")}


def c_tls_generated(r: Render) -> list[str]:
    """No cert-manager: a CA Secret and one kubernetes.io/tls Secret per service plus the
    client's, all from that CA; for every name the chart dials, every identity of the
    release completes a mutual TLS handshake with the service's certificate; a client
    without a certificate, or a name the certificate does not carry, is refused."""
    bad = []
    if r.kind("Certificate") or r.kind("Issuer"):
        bad.append("cert-manager resources without the cert-manager API")
    ca = r.get("Secret", f"{FULL}-ca-tls")
    if not ca or set(ca.get("data") or {}) != {"tls.crt", "tls.key"}:
        return bad + [f"no CA Secret {FULL}-ca-tls with tls.crt, tls.key"]
    for comp in ("tracker", "peer", "webserver", "client"):
        sec = r.get("Secret", f"{FULL}-{comp}-tls")
        if not sec or set(sec.get("data") or {}) != {"tls.crt", "tls.key", "ca.crt"}:
            return bad + [f"no Secret {FULL}-{comp}-tls with tls.crt, tls.key, ca.crt"]
        if sec.get("type") != "kubernetes.io/tls":
            bad.append(f"{FULL}-{comp}-tls: type {sec.get('type')}")
        if sec["data"]["ca.crt"] != ca["data"]["tls.crt"]:
            bad.append(f"{FULL}-{comp}-tls: ca.crt is not the release CA")
    ids = generated_identities(r)
    for comp, name, where in sorted(set(dialled(r))):
        for client in ("tracker", "peer", "webserver", "client"):
            err, cert = tlscheck.handshake(ids[comp], ids[client], name)
            if err:
                bad.append(f"{where}: {client} dialling {comp} as {name}: {err}")
    err, _ = tlscheck.handshake(ids["tracker"], None, f"{FULL}-tracker.{NAMESPACE}.svc.cluster.local")
    if not err:
        bad.append("the tracker accepted a client without a certificate (not mutual)")
    err, _ = tlscheck.handshake(ids["peer"], ids["client"], f"{FULL}-tracker.{NAMESPACE}.svc.cluster.local")
    if not err:
        bad.append("the peer's certificate is valid for the tracker's name")
    return bad


def c_tls_validity(r: Render, days: int) -> list[str]:
    import datetime as dt
    err, cert = tlscheck.handshake(generated_identities(r)["tracker"], generated_identities(r)["client"], "127.0.0.1")
    if err:
        return [err]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    left = dt.datetime.strptime(cert["notAfter"], "%b %d %H:%M:%S %Y %Z") - now
    return [] if abs(left.days - days) <= 2 else [f"the tracker certificate is valid {left.days} more days, want {days}"]


def c_tls_checksum(r: Render) -> list[str]:
    """Each workload's checksum/tls is over the certificate its Secret holds (computed
    once per render), so a replaced certificate rolls exactly its pods."""
    bad = []
    for w in r.workloads():
        comp = component_of(w["metadata"])
        sec = r.get("Secret", f"{FULL}-{comp}-tls")
        ann = sec["metadata"].get("annotations") or {}
        d = sec["data"]
        want = hashlib.sha256(json.dumps(
            {"ca": d["ca.crt"], "crt": d["tls.crt"], "key": d["tls.key"], "names": ann.get("shoal.io/tls-names"),
             "renewAt": ann.get("shoal.io/tls-renew-at")}, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        got = (w["spec"]["template"]["metadata"].get("annotations") or {}).get("checksum/tls")
        if got != want:
            bad.append(f"{comp}: checksum/tls {got} is not over its Secret's certificate ({want})")
    return bad


def c_tls_cert_manager(r: Render, issuer: dict | None = None) -> list[str]:
    """cert-manager: no Helm-made key material; one Certificate per Secret the pods mount,
    for every name the chart dials (127.0.0.1 as an IP SAN), server and client usages,
    issued by the chart's chain (self-signed Issuer -> CA Certificate -> CA Issuer) or
    by `issuer`."""
    bad = []
    if any(component_of(s["metadata"]) == "tls" for s in r.kind("Secret")):
        bad.append("a Helm-generated TLS Secret although cert-manager issues them")
    certs = {c["spec"]["secretName"]: c for c in r.kind("Certificate")}
    issuers = {i["metadata"]["name"]: i for i in r.kind("Issuer")}
    if issuer is None:
        ca = certs.get(f"{FULL}-ca-tls")
        ca_issuer = issuers.get(f"{FULL}-ca")
        if not ca or not ca["spec"].get("isCA"):
            return bad + [f"no CA Certificate into Secret {FULL}-ca-tls"]
        root = issuers.get(ca["spec"]["issuerRef"]["name"])
        if not root or "selfSigned" not in root["spec"]:
            bad.append("the CA Certificate is not issued by a self-signed Issuer")
        if not ca_issuer or ca_issuer["spec"].get("ca", {}).get("secretName") != f"{FULL}-ca-tls":
            bad.append(f"no CA Issuer {FULL}-ca over Secret {FULL}-ca-tls")
        issuer = {"name": f"{FULL}-ca", "kind": "Issuer", "group": "cert-manager.io"}
    elif issuers:
        bad.append(f"Issuers {sorted(issuers)} rendered although tls.certManager.issuerRef is set")
    for comp in ("tracker", "peer", "webserver", "client"):
        cert = certs.get(f"{FULL}-{comp}-tls")
        if not cert:
            bad.append(f"no Certificate into Secret {FULL}-{comp}-tls")
            continue
        if cert["spec"]["issuerRef"] != issuer:
            bad.append(f'{comp}: issuerRef {cert["spec"]["issuerRef"]}, want {issuer}')
        usages = set(cert["spec"].get("usages") or [])
        want = {"client auth"} | ({"server auth"} if comp != "client" else set())
        if not want <= usages:
            bad.append(f"{comp}: usages {sorted(usages)} lack {sorted(want - usages)}")
    for comp, name, where in sorted(set(dialled(r))):
        spec = (certs.get(f"{FULL}-{comp}-tls") or {}).get("spec") or {}
        sans = (spec.get("ipAddresses") or []) if re.fullmatch(r"[0-9.]+", name) else (spec.get("dnsNames") or [])
        if not covers(sans, name):
            bad.append(f"{where}: the {comp} Certificate does not cover {name} ({sans})")
    return bad


def c_tls_monitoring(r: Render) -> list[str]:
    """Metrics ports serve HTTPS: the ServiceMonitors scrape https, verifying with the
    release CA; Services and pod annotations say https."""
    bad = []
    sources = tls_sources(r)
    for sm in r.kind("ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            tc = ep.get("tlsConfig") or {}
            ca = (tc.get("ca") or {}).get("secret") or {}
            if ep.get("scheme") != "https" or ca.get("key") not in sources.get(ca.get("name"), set()):
                bad.append(f'ServiceMonitor {sm["metadata"]["name"]}: scheme {ep.get("scheme")}, CA {ca}')
            if tc.get("insecureSkipVerify"):
                bad.append(f'ServiceMonitor {sm["metadata"]["name"]}: insecureSkipVerify')
    for name, port in ((f"{FULL}-tracker", "metrics"), (f"{FULL}-peer", "metrics"), (f"{FULL}-webserver", "http")):
        p = [x for x in r.get("Service", name)["spec"]["ports"] if x["name"] == port]
        if not p or p[0].get("appProtocol") != "https":
            bad.append(f"Service {name} port {port}: appProtocol {p and p[0].get('appProtocol')}")
    for w in r.workloads():
        ann = w["spec"]["template"]["metadata"].get("annotations") or {}
        if "prometheus.io/scrape" in ann and ann.get("prometheus.io/scheme") != "https":
            bad.append(f'{w["metadata"]["name"]}: prometheus.io/scheme {ann.get("prometheus.io/scheme")}')
    return bad


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", default=os.path.join(ROOT, ".tools/bin/helm"))
    ap.add_argument("--chart", default=os.path.join(ROOT, "helm/shoal"))
    a = ap.parse_args()
    prod_values = os.path.join(a.chart, "values-production.yaml")

    t = Checker()
    renders: dict[str, Render] = {}

    def render(name: str, args: list[str], tls: bool = False) -> Render | None:
        def go() -> None:
            renders[name] = Render(name, helm_template(a.helm, a.chart, args), args, tls)
        t.check(f"[{name}] helm template {' '.join(args)}".rstrip(), go)
        return renders.get(name)

    default = render("default", [])
    prod = render("production", ["-f", prod_values], tls=True)
    generic = [
        ("recommended labels on every resource and pod", c_labels),
        ("enableServiceLinks: false on every pod spec", c_service_links),
        ("liveness + readiness probes on every container (native gRPC, `shoal health` with TLS; webserver "
         "liveness on HTTP(S) /healthz)", c_probes),
        ("non-root uid 10001, readOnlyRootFilesystem, drop ALL, no escalation, RuntimeDefault", c_security),
        ("resource requests and limits on every container", c_resources),
        ("images have a tag or digest and a pull policy", c_images),
        ("PVCs on tracker and peer mounted at /var/lib/shoal", c_persistence),
        ("peers spread over topology.kubernetes.io/zone", c_peer_spread),
        ("PodDisruptionBudgets for peers and webserver", c_pdbs),
        ("NetworkPolicies for every component; peers reachable from peers, tracker, webserver", c_netpol),
        ("checksum/config annotation on every workload", c_checksum),
        ("SHOAL_* env from the component ConfigMap via envFrom", c_envfrom),
        ("peer advertise address = stable per-pod DNS name via the headless Service", c_peer_identity),
        ("Services select pods and target declared ports", c_services),
        ("ServiceAccounts exist, tokens not automounted", c_service_accounts),
        ("zone discovery: initContainer + ClusterRole get nodes", c_zone_discovery),
        ("Grafana dashboard ConfigMaps are valid JSON", c_dashboards),
        ("helm test pod checks health of all services and does put/get", c_helm_test),
    ]
    for name, r in (("default", default), ("production", prod)):
        if r is None:
            continue
        for title, fn in generic:
            t.check(f"[{name}] {title}", lambda fn=fn, r=r: fn(r))
    if default:
        t.check("[default] no ServiceMonitor unless enabled", lambda: c_no_servicemonitor(default))
        t.check("[default] no PrometheusRule unless monitoring.enabled", lambda: c_no_prometheusrule(default))
        t.check("[default] images default to shoal-<service>:<appVersion>", lambda: c_default_tag(default))
    if prod:
        t.check("[production] ServiceMonitors select one Service each, on existing ports", lambda: c_servicemonitor(prod))
        t.check("[production] PrometheusRule: the alert rules, jobs of this release's ServiceMonitors",
                lambda: c_prometheusrule(prod))

        # Another release name and namespace: the rules follow them (no name baked in).
        def other() -> list[str]:
            r = Render("other", helm_template(a.helm, a.chart, ["-f", prod_values], "files", "storage"),
                       ["-f", prod_values], True, "storage")
            return c_prometheusrule(r)
        t.check("[production as release files in namespace storage] PrometheusRule jobs and "
                "namespace follow the release", other)
        t.check("[production] auth tokens from a Secret on every service", lambda: c_auth(prod))
        t.check("[production] Ingress routes to the webserver UI", lambda: c_ingress(prod))
        t.check("[production] peers strictly spread over zones", lambda: c_zone_strict(prod))
    t.check("helm/shoal/alerts/alerts.yml is a copy of deploy/prometheus/alerts.yml", c_alerts_copy)

    reg = render("registry", ["--set", "global.image.registry=reg.example.com/shoal", "--set", "global.image.tag=9.9.9"])
    if reg:
        t.check("[registry] images are <registry>/shoal-<service>:<tag>", lambda: c_registry(reg))

    store = render("store", ["--set", "tracker.replicas=3", "--set", "store.existingSecret=shoal-db",
                             "--set", "store.existingSecretKey=dsn"])
    if store:
        t.check("[store] replicated tracker reads the store URL from the Secret file", lambda: c_store(store))

    changed = render("changed-config", ["--set", "tracker.config.replicationFactor=2", "--set", "peer.env.FOO=bar"])
    if default and changed:
        def c_rolls() -> list[str]:
            bad = []
            for comp in ("tracker", "peer"):
                if checksum_of(default, comp) == checksum_of(changed, comp):
                    bad.append(f"{comp}: checksum unchanged after a config change")
            if checksum_of(default, "webserver") != checksum_of(changed, "webserver"):
                bad.append("webserver: checksum changed although its config did not")
            return bad
        t.check("[changed-config] checksum/config changes with the config (pods roll)", c_rolls)

    static_zone = render("static-zone", ["--set", "peer.zone.value=zone-a", "--set", "networkPolicy.enabled=false"])
    if static_zone:
        def c_static() -> list[str]:
            bad = []
            sts = static_zone.get("StatefulSet", f"{FULL}-peer")
            if sts["spec"]["template"]["spec"].get("initContainers"):
                bad.append("initContainer rendered although the zone is fixed")
            if static_zone.kind("ClusterRole"):
                bad.append("ClusterRole rendered although the zone is fixed")
            if static_zone.get("ConfigMap", f"{FULL}-peer-env")["data"].get("SHOAL_ZONE") != "zone-a":
                bad.append("SHOAL_ZONE not set")
            if static_zone.kind("NetworkPolicy"):
                bad.append("NetworkPolicy rendered although disabled")
            return bad
        t.check("[static-zone] a fixed zone needs no discovery; NetworkPolicies can be off", c_static)

    if default:
        t.check("[default] no backup CronJob unless backup.enabled", lambda: c_no_backup(default))
    for name, r in (("default", default), ("production", prod)):
        if r is not None:
            t.check(f"[{name}] web uploads stream: no spool, 256Mi /tmp, buffers within memory",
                    lambda r=r: c_upload_streams(r))
    bvol = render("backup-volume", ["--set", "backup.enabled=true", "--set", "auth.enabled=true"])
    bs3 = render("backup-s3", ["--set", "backup.enabled=true", "--set", "backup.destination=s3",
                               "--set", "backup.s3.bucket=shoal-backups-test", "--set", "backup.s3.prefix=ci/catalogue/",
                               "--set", "backup.s3.kmsKeyId=alias/shoal-backup",
                               "--set", "backup.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn="
                                        "arn:aws:iam::123456789012:role/shoal-backup"])
    for name, r in (("backup-volume", bvol), ("backup-s3", bs3)):
        if r is None:
            continue
        for title, fn in generic:
            t.check(f"[{name}] {title}", lambda fn=fn, r=r: fn(r))
        t.check(f"[{name}] backup CronJob: tracker image runs `shoal-tracker backup` against this release's "
                "tracker, one at a time, bounded, own ServiceAccount, admitted by the tracker's NetworkPolicy",
                lambda r=r: c_backup_common(r))
    if bvol:
        t.check("[backup-volume] snapshots on the chart's PVC (kept on uninstall), timestamped, newest 48 kept; "
                "only the cluster token mounted", lambda: c_backup_volume(bvol))
    if bs3:
        t.check("[backup-s3] snapshot in an emptyDir, uploaded by the AWS CLI with SSE-KMS, IRSA role on the "
                "ServiceAccount", lambda: c_backup_s3(bs3))

    # TLS: off by default (above: plaintext probes and URLs); on, with the CA generated by
    # Helm (no cert-manager API), from cert-manager when its API is there, or from an
    # existing issuer.
    if default:
        t.check("[default] tls off: no SHOAL_TLS__*, no certificates, http:// URLs", lambda: c_no_tls(default))
    tls_gen = render("tls", ["--set", "tls.enabled=true", "--set", "backup.enabled=true", "--set", "auth.enabled=true",
                             "--set", "observability.serviceMonitor.enabled=true"], tls=True)
    tls_cm = render("tls-cert-manager", ["--set", "tls.enabled=true", "--set", "backup.enabled=true",
                                         "--api-versions", "cert-manager.io/v1/Certificate"], tls=True)
    tls_issuer = render("tls-issuer", ["--set", "tls.enabled=true", "--set", "tls.certManager.enabled=true",
                                       "--set", "tls.certManager.issuerRef.name=corp-ca",
                                       "--set", "tls.certManager.issuerRef.kind=ClusterIssuer",
                                       "--set", "tls.extraDnsNames[0]=tracker.example.com"], tls=True)
    tls_off = render("tls-cert-manager-off", ["--set", "tls.enabled=true", "--set", "tls.certManager.enabled=false",
                                              "--set", "tls.generated.validityDays=30",
                                              "--api-versions", "cert-manager.io/v1/Certificate"], tls=True)
    for name, r in (("tls", tls_gen), ("tls-cert-manager", tls_cm), ("tls-issuer", tls_issuer),
                    ("tls-cert-manager-off", tls_off), ("production", prod)):
        if r is None:
            continue
        if name.startswith("tls"):
            for title, fn in generic:
                t.check(f"[{name}] {title}", lambda fn=fn, r=r: fn(r))
        t.check(f"[{name}] every shoal container (services, backup, helm test) has SHOAL_TLS__CERT_FILE/KEY_FILE/"
                "CA_FILE in a mounted Secret the release provides", lambda r=r: c_tls_wiring(r))
        t.check(f"[{name}] every URL is https://", lambda r=r: c_tls_urls(r))
        t.check(f"[{name}] the chart dials the tracker Service, per-pod peer names, 127.0.0.1 (probes), the webserver",
                lambda r=r: c_tls_dialled(r))
    for name, r in (("tls", tls_gen), ("tls-cert-manager-off", tls_off), ("production", prod)):
        if r is None:
            continue
        t.check(f"[{name}] Helm-generated CA and certificates: mutual handshakes for every name dialled, "
                "refused without a client certificate or for a foreign name", lambda r=r: c_tls_generated(r))
        t.check(f"[{name}] checksum/tls is over the certificate in the pod's Secret", lambda r=r: c_tls_checksum(r))
    if tls_gen:
        t.check("[tls] generated certificates are valid 365 days (tls.generated.validityDays)",
                lambda: c_tls_validity(tls_gen, 365))
        t.check("[tls] backup CronJob: tracker image runs `shoal-tracker backup` over TLS", lambda: c_backup_common(tls_gen))
    if tls_off:
        t.check("[tls-cert-manager-off] tls.generated.validityDays=30 gives 30-day certificates",
                lambda: c_tls_validity(tls_off, 30))
    for name, r in (("tls", tls_gen), ("production", prod)):
        if r is not None:
            t.check(f"[{name}] metrics scraped over https, verified with the release CA", lambda r=r: c_tls_monitoring(r))
    if tls_cm:
        t.check("[tls-cert-manager] cert-manager Certificates from the chart's CA chain cover every name dialled",
                lambda: c_tls_cert_manager(tls_cm))
    if tls_issuer:
        t.check("[tls-issuer] Certificates from the given ClusterIssuer, no Issuers, tls.extraDnsNames on the "
                "service certificates", lambda: c_tls_cert_manager(tls_issuer, {
                    "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}) + [
                    f"{c} lacks tracker.example.com" for c in ("tracker", "peer", "webserver")
                    if "tracker.example.com" not in tls_issuer.get("Certificate", f"{FULL}-{c}-tls")["spec"]["dnsNames"]])

    print(f"{t.passed} passed, {t.failed} failed")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
