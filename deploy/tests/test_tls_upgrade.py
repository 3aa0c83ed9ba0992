#!/usr/bin/env python3
"""The Helm-generated TLS certificates (tls.enabled, no cert-manager) across upgrades.

    deploy/tests/test_tls_upgrade.py [--helm .tools/bin/helm] [--chart helm/shoal]

`helm template --dry-run=server` against a fake API server on 127.0.0.1 makes the
chart's `lookup` see the Secrets of an earlier render, as `helm upgrade` does:
  - an upgrade keeps the CA and every certificate byte for byte (pods do not roll);
  - a certificate in the last third of its life (shoal.io/tls-renew-at passed) is
    replaced, signed by the same CA, and only its pods roll;
  - new names (tls.extraDnsNames) replace the service certificates, not the client's;
  - a deleted CA Secret replaces the CA and every certificate.
Prints one line per check and "N passed, N failed"; exits 1 when anything failed.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer

import yaml

import tlscheck
from fakeapi import FakeApi, kubeconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE, NAMESPACE, FULL = "ci", "shoal-ci", "ci-shoal"
COMPONENTS = ("tracker", "peer", "webserver", "client")

# Discovery for the kinds the chart renders, so that helm can map and dry-run them.
KINDS = {
    "v1": [("configmaps", "ConfigMap", True), ("secrets", "Secret", True), ("services", "Service", True),
           ("serviceaccounts", "ServiceAccount", True), ("pods", "Pod", True),
           ("persistentvolumeclaims", "PersistentVolumeClaim", True)],
    "apps/v1": [("statefulsets", "StatefulSet", True), ("deployments", "Deployment", True)],
    "batch/v1": [("cronjobs", "CronJob", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True), ("ingresses", "Ingress", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "rbac.authorization.k8s.io/v1": [("clusterroles", "ClusterRole", False),
                                     ("clusterrolebindings", "ClusterRoleBinding", False)],
}
SECRETS: dict[str, dict] = {}  # what the fake cluster holds


def resource_list(gv: str) -> dict:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
        {"name": p, "singularName": k.lower(), "namespaced": n, "kind": k,
         "verbs": ["create", "get", "list", "patch", "update", "delete"]} for p, k, n in KINDS[gv]]}


class Cluster(FakeApi):
    """Discovery, the Secrets in SECRETS, 404 for anything else; dry-run creates echo."""

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/version":
            return self.send_json(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0"})
        if path == "/apis":
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": "v1"}],
                 "preferredVersion": {"groupVersion": gv, "version": "v1"}} for gv in KINDS if "/" in gv]})
        if path == "/api/v1":
            return self.send_json(200, resource_list("v1"))
        m = re.fullmatch(r"/apis/(.+/v1)", path)
        if m and m.group(1) in KINDS:
            return self.send_json(200, resource_list(m.group(1)))
        m = re.fullmatch(rf"/api/v1/namespaces/{NAMESPACE}/secrets/([^/]+)", path)
        if m and m.group(1) in SECRETS:
            return self.send_json(200, SECRETS[m.group(1)])
        if path.endswith("/secrets"):  # helm's release storage: no releases
            return self.send_json(200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []})
        if path == "/api":
            return super().do_GET()
        self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "code": 404})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_json(201, json.loads(body))

    def do_PATCH(self) -> None:  # noqa: N802  (helm adopting a live Secret, dry run)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        m = re.search(r"/secrets/([^/?]+)", self.path)
        self.send_json(200, SECRETS.get(m.group(1) if m else "", {}))

    do_PUT = do_PATCH


class Render:
    def __init__(self, docs: list[dict]) -> None:
        self.docs = docs

    def secret(self, name: str) -> dict:
        return next(d for d in self.docs if d["kind"] == "Secret" and d["metadata"]["name"] == name)

    def leaf(self, comp: str) -> dict:
        return self.secret(f"{FULL}-{comp}-tls")["data"]

    def ca(self) -> dict:
        return self.secret(f"{FULL}-ca-tls")["data"]

    def checksum(self, comp: str) -> str:
        kind = "Deployment" if comp == "webserver" else "StatefulSet"
        w = next(d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == f"{FULL}-{comp}")
        return w["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", default=os.path.join(ROOT, ".tools/bin/helm"))
    ap.add_argument("--chart", default=os.path.join(ROOT, "helm/shoal"))
    a = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Cluster)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="shoal-tls-upgrade-")
    env = dict(os.environ, KUBECONFIG=kubeconfig(os.path.join(tmp, "kubeconfig"),
                                                  f"http://127.0.0.1:{server.server_address[1]}"),
               HELM_CACHE_HOME=os.path.join(tmp, "cache"), HELM_CONFIG_HOME=os.path.join(tmp, "config"))

    def render(*extra: str) -> Render:
        cmd = [a.helm, "template", RELEASE, a.chart, "--namespace", NAMESPACE, "--dry-run=server",
               "--disable-openapi-validation", "--set", "tls.enabled=true", *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}:\n{out.stderr[-2000:]}")
        return Render([d for d in yaml.safe_load_all(out.stdout) if d])

    def install(r: Render) -> None:
        """The cluster now holds the TLS Secrets of `r` (as helm would have applied them)."""
        SECRETS.clear()
        for d in r.docs:
            if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-tls"):
                live = copy.deepcopy(d)
                live["metadata"].setdefault("annotations", {}).update(
                    {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE})
                SECRETS[d["metadata"]["name"]] = live

    passed = failed = 0

    def check(name: str, problems: list[str]) -> None:
        nonlocal passed, failed
        if problems:
            failed += 1
            print(f"FAIL {name}")
            for p in problems[:20]:
                print(f"     - {p}")
        else:
            passed += 1
            print(f"ok   {name}")

    def same(r1: Render, r2: Render, comps: tuple[str, ...]) -> list[str]:
        return [f"{c}: certificate replaced" for c in comps if r1.leaf(c) != r2.leaf(c)]

    def replaced(r1: Render, r2: Render, comps: tuple[str, ...]) -> list[str]:
        bad = [f"{c}: certificate kept" for c in comps if r1.leaf(c)["tls.crt"] == r2.leaf(c)["tls.crt"]]
        return bad + [f"{c}: key kept" for c in comps if r1.leaf(c)["tls.key"] == r2.leaf(c)["tls.key"]]

    def rolls(r1: Render, r2: Render, comps: tuple[str, ...]) -> list[str]:
        """The workloads in comps (and only those) get a new checksum/tls."""
        bad = []
        for c in ("tracker", "peer", "webserver"):
            changed = r1.checksum(c) != r2.checksum(c)
            if changed != (c in comps):
                bad.append(f"{c}: pods {'roll' if changed else 'do not roll'}")
        return bad

    def handshakes(r: Render) -> list[str]:
        """Every certificate of `r` still works with every other (one CA)."""
        ids = {c: tlscheck.Identity.from_secret(r.secret(f"{FULL}-{c}-tls")) for c in COMPONENTS}
        bad = []
        for srv in ("tracker", "peer", "webserver"):
            for cli in COMPONENTS:
                err, _ = tlscheck.handshake(ids[srv], ids[cli], "127.0.0.1")
                if err:
                    bad.append(f"{cli} -> {srv}: {err}")
        return bad

    try:
        first = render()
        check("first install: a CA and the certificates, no cluster state", handshakes(first))
        install(first)
        again = render()
        check("upgrade: CA and every certificate kept byte for byte, no pod rolls",
              ([] if first.ca() == again.ca() else ["CA replaced"]) + same(first, again, COMPONENTS)
              + rolls(first, again, ()))

        install(first)
        SECRETS[f"{FULL}-peer-tls"]["metadata"]["annotations"]["shoal.io/tls-renew-at"] = "1"
        renewed = render()
        check("upgrade after the peer certificate's renewal time: only it is replaced, same CA, only peers roll",
              ([] if first.ca() == renewed.ca() else ["CA replaced"])
              + replaced(first, renewed, ("peer",)) + same(first, renewed, ("tracker", "webserver", "client"))
              + rolls(first, renewed, ("peer",)) + handshakes(renewed))

        install(first)
        names = render("--set", "tls.extraDnsNames[0]=shoal.example.com")
        check("upgrade with new tls.extraDnsNames: the service certificates are replaced, the client's kept",
              replaced(first, names, ("tracker", "peer", "webserver")) + same(first, names, ("client",))
              + rolls(first, names, ("tracker", "peer", "webserver")) + handshakes(names))

        install(first)
        del SECRETS[f"{FULL}-ca-tls"]
        new_ca = render()
        check("upgrade after deleting the CA Secret: a new CA and new certificates from it, every pod rolls",
              ([] if first.ca() != new_ca.ca() else ["CA kept"]) + replaced(first, new_ca, COMPONENTS)
              + rolls(first, new_ca, ("tracker", "peer", "webserver")) + handshakes(new_ca)
              + [f"{c}: ca.crt is not the new CA" for c in COMPONENTS
                 if new_ca.leaf(c)["ca.crt"] != new_ca.ca()["tls.crt"]])
    except Exception as e:  # a failed render fails the test, with helm's message
        check("helm template --dry-run=server against the fake API", [f"{type(e).__name__}: {e}"])
    finally:
        server.shutdown()

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
