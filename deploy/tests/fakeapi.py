"""A fake Kubernetes API server on 127.0.0.1 for tests that run the real kubectl:
discovery answers for the core group (nodes only) and a kubeconfig pointing at it.
Subclass FakeApi and answer the resource paths in `resource(path)`."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import yaml

API_VERSIONS = {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
API_GROUPS = {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
V1_RESOURCES = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
     "verbs": ["get", "list", "watch"], "shortNames": ["no"]}]}
DISCOVERY = {"/api": API_VERSIONS, "/apis": API_GROUPS, "/api/v1": V1_RESOURCES}


class FakeApi(BaseHTTPRequestHandler):
    def log_message(self, *_):  # keep the test output clean
        pass

    def send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def resource(self, path: str) -> tuple[int, dict] | None:
        """(status, body) for a resource path, or None for 404."""
        return None

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path in DISCOVERY:
            return self.send_json(200, DISCOVERY[path])
        answer = self.resource(path)
        if answer is None:
            return self.send_json(404, {"kind": "Status", "code": 404})
        self.send_json(*answer)


def kubeconfig(path: str, server: str) -> str:
    """Write a kubeconfig whose current context talks to `server`; returns `path`."""
    with open(path, "w") as f:
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "fake", "user": {"token": "test"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }, f)
    return path
