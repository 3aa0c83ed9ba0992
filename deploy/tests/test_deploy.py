#!/usr/bin/env python3
"""`make deploy`'s promises, offline: the commit tag and the preflight.

    deploy/tests/test_deploy.py [--helm .tools/bin/helm] [--kubectl .tools/bin/kubectl]

Cases: the dry run shows and pins the image tag VERSION-gCOMMIT; the preflight fails in
under 10 s with one line when no cluster answers, when neither REGISTRY nor KIND_CLUSTER
is set, and when the nodes run another architecture than this machine (a fake API server
on 127.0.0.1); it passes against nodes of this machine's architecture.
Prints "N passed, N failed"; exits 1 on failure.
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fakeapi import FakeApi, kubeconfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
    platform.machine(), platform.machine())
OTHER_ARCH = "arm64" if ARCH == "amd64" else "amd64"

NODE_ARCHS: list[str] = []  # what the fake API server reports; set per case


class NodesApi(FakeApi):
    def resource(self, path: str) -> tuple[int, dict] | None:
        if path != "/api/v1/nodes":
            return None
        items = [{"kind": "Node", "apiVersion": "v1", "metadata": {"name": f"n{i}"},
                  "status": {"nodeInfo": {"architecture": a}}} for i, a in enumerate(NODE_ARCHS)]
        return 200, {"kind": "NodeList", "apiVersion": "v1", "items": items, "metadata": {}}


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def deploy(args: list[str], env: dict, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    t = time.monotonic()
    p = subprocess.run(["bash", os.path.join(ROOT, "deploy/scripts/deploy.sh"), *args],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", default=os.path.join(ROOT, ".tools/bin/helm"))
    ap.add_argument("--kubectl", default=os.path.join(ROOT, ".tools/bin/kubectl"))
    a = ap.parse_args()
    tools = os.path.dirname(os.path.abspath(a.helm))
    server = ThreadingHTTPServer(("127.0.0.1", 0), NodesApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    passed = failed = 0

    def check(name: str, problems: list[str]) -> None:
        nonlocal passed, failed
        if problems:
            failed += 1
            print(f"FAIL {name}: " + "; ".join(problems))
        else:
            passed += 1
            print(f"PASS {name}")

    with tempfile.TemporaryDirectory() as tmp:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
                "HELM": os.path.abspath(a.helm), "KUBECTL": os.path.abspath(a.kubectl),
                "KUBERNETES_VALIDATE": os.path.join(tools, "kubernetes-validate"),
                "VERSION": "0.1.0"}
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()

        p, _ = deploy(["--dry-run"], {**base, "REGISTRY": "reg.example.com/shoal"}, timeout=300)
        problems = [] if p.returncode == 0 else [f"exit {p.returncode}: {p.stderr.strip()[-300:]}"]
        if f"image tag 0.1.0-g{commit}" not in p.stdout:
            problems.append(f"output does not name the tag 0.1.0-g{commit}")
        if f"reg.example.com/shoal/shoal-peer:0.1.0-g{commit}" not in p.stdout:
            problems.append("the images are not listed under the commit tag")
        if f"global.image.tag=0.1.0-g{commit}" not in p.stdout:
            problems.append("the chart is not pinned to the commit tag")
        check("dry run: images and chart pinned to VERSION-gCOMMIT", problems)

        unreachable = kubeconfig(os.path.join(tmp, "down"), f"https://127.0.0.1:{closed_port()}")
        fake = kubeconfig(os.path.join(tmp, "fake"), f"http://127.0.0.1:{server.server_address[1]}")
        cases = [
            # name, env, node architectures, want rc, want text (stderr or stdout)
            ("no cluster answers -> fails fast, one line",
             {"KUBECONFIG": unreachable, "REGISTRY": "reg.example.com/shoal"}, [], 1, "not reachable"),
            ("neither REGISTRY nor KIND_CLUSTER -> fails naming them",
             {"KUBECONFIG": fake}, [ARCH], 1, "set REGISTRY"),
            (f"nodes run {OTHER_ARCH}, images are {ARCH} -> fails naming both",
             {"KUBECONFIG": fake, "REGISTRY": "reg.example.com/shoal"}, [ARCH, OTHER_ARCH], 1,
             f"a node runs {OTHER_ARCH} but the images are built here for {ARCH}"),
            (f"nodes run {ARCH} -> preflight OK",
             {"KUBECONFIG": fake, "REGISTRY": "reg.example.com/shoal"}, [ARCH, ARCH], 0, "preflight OK"),
        ]
        for name, env, archs, want_rc, want_text in cases:
            NODE_ARCHS[:] = archs
            p, took = deploy(["--preflight"], {**base, **env})
            problems = []
            if p.returncode != want_rc:
                problems.append(f"exit {p.returncode}, want {want_rc}")
            if took >= 10:
                problems.append(f"took {took:.1f} s (limit 10 s)")
            if want_text not in p.stdout + p.stderr:
                problems.append(f"output lacks {want_text!r}: {(p.stdout + p.stderr).strip()[-300:]}")
            if want_rc != 0 and len(p.stderr.strip().splitlines()) != 1:
                problems.append(f"want one line on stderr, got: {p.stderr.strip()!r}")
            check(f"preflight: {name} ({took:.1f} s)", problems)
    server.shutdown()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
