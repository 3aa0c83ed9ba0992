#!/usr/bin/env python3
"""Run the peer's zone initContainer script, as the chart renders it, against a
fake Kubernetes API server on 127.0.0.1 with the real kubectl.

    deploy/tests/test_zone_init.py [--helm .tools/bin/helm] [--kubectl .tools/bin/kubectl]

Cases: a node with the zone label (the file holds the zone), a node without it
(empty file, exit 0: the peer keeps its default zone), a forbidden API call
(exit 1 after the retries, with a message naming the ClusterRole), and a
custom label name (peer.zone.nodeLabel). Prints "N passed, N failed"; exits 1 on failure.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from http.server import ThreadingHTTPServer

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fakeapi import FakeApi, kubeconfig as write_kubeconfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZONE_FILE = "/etc/shoal/zone/zone"

NODES = {
    "node-a": {"topology.kubernetes.io/zone": "eu-west-1a", "kubernetes.io/hostname": "node-a",
               "example.com/rack": "rack-7"},
    "node-bare": {"kubernetes.io/hostname": "node-bare"},
}
FORBIDDEN = {"node-forbidden"}

class NodeApi(FakeApi):
    def resource(self, path: str) -> tuple[int, dict] | None:
        if not path.startswith("/api/v1/nodes/"):
            return None
        name = path.rsplit("/", 1)[1]
        if name in FORBIDDEN:
            return 403, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "Forbidden", "code": 403, "message": f'nodes "{name}" is forbidden'}
        if name in NODES:
            return 200, {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": NODES[name]}}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": "not found"}


def zone_init(helm: str, extra: list[str]) -> dict:
    out = subprocess.run([helm, "template", "ci", os.path.join(ROOT, "helm/shoal"), *extra],
                         check=True, capture_output=True, text=True).stdout
    for d in yaml.safe_load_all(out):
        if d and d.get("kind") == "StatefulSet" and d["metadata"]["name"].endswith("-peer"):
            for c in d["spec"]["template"]["spec"].get("initContainers") or []:
                if c["name"] == "zone":
                    return c
    raise RuntimeError("no zone initContainer rendered")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", default=os.path.join(ROOT, ".tools/bin/helm"))
    ap.add_argument("--kubectl", default=os.path.join(ROOT, ".tools/bin/kubectl"))
    a = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), NodeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    passed = failed = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = write_kubeconfig(os.path.join(tmp, "kubeconfig"), f"http://127.0.0.1:{port}")
            bindir = os.path.join(tmp, "bin")
            os.makedirs(bindir)
            os.symlink(os.path.abspath(a.kubectl), os.path.join(bindir, "kubectl"))

            cases = [
                # name, helm args, node, want exit code, want file content, want text in output
                ("labelled node -> its zone", [], "node-a", 0, "eu-west-1a", "zone eu-west-1a"),
                ("node without the label -> empty file, default zone", [], "node-bare", 0, "", "has no label"),
                ("API forbids reading the node -> exit 1 naming the ClusterRole", [], "node-forbidden", 1, None,
                 "ClusterRole (get nodes)"),
                ("custom peer.zone.nodeLabel", ["--set", "peer.zone.nodeLabel=example.com/rack"], "node-a", 0,
                 "rack-7", "zone rack-7"),
            ]
            for name, extra, node, want_rc, want_zone, want_text in cases:
                zone_path = os.path.join(tmp, f"zone-{node}-{len(extra)}")
                try:
                    c = zone_init(a.helm, extra)
                    script = c["command"][-1].replace(ZONE_FILE, zone_path).replace("sleep 2", "sleep 0")
                    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
                    env.update({"NODE_NAME": node, "KUBECONFIG": kubeconfig, "HOME": tmp,
                                "PATH": f"{bindir}:/usr/bin:/bin"})
                    cmd = c["command"][:-1] + [script]
                    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
                    problems = []
                    if p.returncode != want_rc:
                        problems.append(f"exit {p.returncode}, want {want_rc}")
                    if want_zone is not None:
                        got = open(zone_path).read() if os.path.exists(zone_path) else None
                        if got != want_zone:
                            problems.append(f"zone file {got!r}, want {want_zone!r}")
                    if want_text not in p.stdout + p.stderr:
                        problems.append(f"output lacks {want_text!r}")
                    if problems:
                        problems.append("output: " + (p.stdout + p.stderr).strip().replace("\n", " | ")[:600])
                except Exception as e:  # noqa: BLE001
                    problems = [f"{type(e).__name__}: {e}"]
                if problems:
                    failed += 1
                    print(f"FAIL {name}")
                    for pr in problems:
                        print(f"     - {pr}")
                else:
                    passed += 1
                    print(f"ok   {name}")
    finally:
        server.shutdown()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
