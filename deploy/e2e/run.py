#!/usr/bin/env python3
"""shoal end-to-end chaos scenarios against the compose cluster.

Brings up deploy/compose/docker-compose.yml under a unique project name, runs
the scenarios, ALWAYS tears the cluster down (containers, network, volumes),
prints a summary table and exits non-zero if any scenario failed.

    deploy/e2e/run.py                 # all scenarios
    deploy/e2e/run.py --only 1,2,7    # a subset (later ones put what they need)
    deploy/e2e/run.py --only 8        # the traces scenario alone
    deploy/e2e/run.py --keep          # leave the cluster up for debugging

Images must exist (make images). Only the Python standard library is used.
All traffic stays on the compose network (clients are containers attached to
it) and on loopback (one host-side grpcurl call to the published port).

Environment:
    SHOAL_VERSION          image tag to test               (latest)
    SHOAL_E2E_BIG_MIB      size of the big random file     (200)
    SHOAL_E2E_PEER5_MIB    size of peer5's loop-mounted ext4 volume (512; capacity scenario)
    SHOAL_E2E_GRPCURL      grpcurl binary                  (installed by deploy/scripts/e2e-tools.sh)
    COMPOSE                compose command                 (docker compose if present, else docker-compose)
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import threading
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
SINK = "trace-sink"
SERVICES = [SINK, "tracker", "peer1", "peer2", "peer3", "peer4", "peer5", "webserver"]
PEERS = ["peer1", "peer2", "peer3", "peer4", "peer5"]
ZONES = {"a": ["peer1", "peer2"], "b": ["peer3", "peer4"], "c": ["peer5"]}
TRACKER_URL = "http://tracker:50052"
WEBSERVER_URL = "http://webserver:50051"
# The OTLP receiver every service exports to, and the JSON-lines file it writes
# (in its volume; see deploy/compose/docker-compose.yml).
OTLP_URL = "http://trace-sink:4317"
TRACE_FILE = "/var/lib/shoal/traces.jsonl"
MIB = 1024 * 1024
# Liveness thresholds configured in the compose file (tracker).
DEAD_AFTER_S = 5.0
# How long a peer stopped with SIGTERM stays `restarting` (its copies expected, not
# repaired): SHOAL_COMPOSE_RESTART_GRACE for the compose file.
RESTART_GRACE_S = 30

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[e2e {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


class Fail(Exception):
    """A failed assertion: the scenario is reported FAIL with this message."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def sh(cmd: list[str], *, timeout: float = 120, check_rc: bool = True, env=None,
       quiet: bool = False) -> subprocess.CompletedProcess:
    """Run a command, capture output; raise Fail (with its output) on error."""
    if not quiet:
        log("$ " + shlex.join(cmd))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise Fail(f"timed out after {timeout:.0f}s: {shlex.join(cmd)}") from e
    if check_rc and p.returncode != 0:
        raise Fail(f"exit {p.returncode}: {shlex.join(cmd)}\n"
                   f"  stdout: {tail(p.stdout)}\n  stderr: {tail(p.stderr)}")
    return p


def tail(s: str, n: int = 15) -> str:
    lines = (s or "").strip().splitlines()
    return "\n          ".join(lines[-n:]) if lines else "<empty>"


def poll(what: str, fn, deadline_s: float, interval: float = 1.0):
    """Call fn() until it returns a truthy value; Fail after deadline_s.

    fn may raise Fail (treated as "not yet"); the last reason is reported."""
    end = time.monotonic() + deadline_s
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Fail as e:
            last = str(e)
        if time.monotonic() >= end:
            raise Fail(f"{what}: not reached within {deadline_s:.0f}s"
                       + (f" (last: {last})" if last else ""))
        time.sleep(interval)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_cmd() -> list[str]:
    if os.environ.get("COMPOSE"):
        return shlex.split(os.environ["COMPOSE"])
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("neither `docker compose` nor `docker-compose` is available")


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


class Cluster:
    def __init__(self, project: str, version: str, workdir: Path, grpcurl: Path | None):
        self.project = project
        self.version = version
        self.workdir = workdir
        self.grpcurl = grpcurl
        self.compose = compose_cmd() + ["-p", project, "-f", str(COMPOSE_FILE)]
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.env = dict(os.environ,
                        SHOAL_VERSION=version,
                        SHOAL_RESTART_POLICY="no",  # chaos: a killed container stays dead
                        SHOAL_COMPOSE_RESTART_GRACE=f"{RESTART_GRACE_S}s",
                        SHOAL_WEBSERVER_GRPC_PORT=str(self.grpc_port),
                        SHOAL_WEBSERVER_HTTP_PORT=str(self.http_port))
        self.env.pop("SHOAL_OTLP_ENDPOINT", None)  # the compose default: the trace sink
        self.has_webserver = image_exists(f"shoal-webserver:{version}")
        self.services = SERVICES if self.has_webserver else [s for s in SERVICES if s != "webserver"]
        self.network = ""
        self.clients: list[str] = []
        self.label = f"shoal-e2e={project}"
        self._cids: dict[str, str] = {}  # service -> container id (stable until down/up)
        self.peer5_volume: Path | None = None  # the loop-mounted ext4 behind peer5, if made

    # -- peer5's small volume (a real file system of known size) -----------------
    def mount_peer5_volume(self, mib: int) -> None:
        """An ext4 file system of `mib` MiB on a loop device as peer5's volume, so its
        free space is the volume's (the host disk's is too large to fill by half)."""
        img, mnt = self.workdir / "peer5.ext4", self.workdir / "peer5-volume"
        mnt.mkdir()
        try:
            with open(img, "wb") as f:
                f.truncate(mib * MIB)
            sh(["mkfs.ext4", "-q", "-F", "-m", "0", str(img)], quiet=True)
            sh(["mount", "-o", "loop", str(img), str(mnt)], quiet=True)
            os.chown(mnt, 10001, 10001)  # the images' shoal user
        except (Fail, OSError) as e:
            log(f"no loop-mounted volume for peer5 ({e}); it gets a named volume and the "
                "capacity scenario fails")
            return
        self.peer5_volume = mnt
        self.env["SHOAL_COMPOSE_PEER5_VOLUME"] = str(mnt)
        log(f"peer5's volume: {mib} MiB ext4 on a loop device at {mnt}")

    def unmount_peer5_volume(self) -> None:
        if self.peer5_volume is not None:
            sh(["umount", str(self.peer5_volume)], check_rc=False, quiet=True)
            self.peer5_volume = None

    def ip(self, service: str) -> str:
        """The container's address on the compose network (reachable from the host)."""
        p = sh(["docker", "inspect", "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.cid(service)],
               quiet=True)
        check(bool(p.stdout.strip()), f"{service} has no address (is it running?)")
        return p.stdout.strip()

    def metrics(self, service: str, port: int) -> dict[str, float]:
        """A service's /metrics, as {"name{labels}": value}."""
        url = f"http://{self.ip(service)}:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                text = r.read().decode()
        except OSError as e:
            raise Fail(f"{url}: {e}") from e
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, val = line.rpartition(" ")
                try:
                    out[key] = float(val)
                except ValueError:
                    pass
        return out

    def tracker_metric(self, prefix: str) -> float:
        """Sum of the tracker's series whose name starts with `prefix`."""
        return sum(v for k, v in self.metrics("tracker", 9102).items() if k.startswith(prefix))

    # -- compose ------------------------------------------------------------
    def c(self, *args: str, timeout: float = 180, check_rc: bool = True):
        return sh(self.compose + list(args), timeout=timeout, check_rc=check_rc, env=self.env)

    def up(self) -> None:
        if not self.has_webserver:
            log("shoal-webserver image absent: starting without the webserver "
                "(clients use --tracker)")
        self._cids.clear()
        self.c("up", "-d", *self.services, timeout=300)
        self.wait_healthy(self.services, 120)
        self.network = self._network()
        self.start_clients()

    def down(self, volumes: bool, fast: bool = False) -> None:
        self.stop_clients()
        args = ["down", "--remove-orphans"] + (["-t", "5"] if fast else []) + (["-v"] if volumes else [])
        self.c(*args, timeout=180)
        self._cids.clear()

    def cid(self, service: str) -> str:
        """Container id of a service, stopped or not (labels set by every compose)."""
        if service not in self._cids:
            out = sh(["docker", "ps", "-aq",
                      "--filter", f"label=com.docker.compose.project={self.project}",
                      "--filter", f"label=com.docker.compose.service={service}"],
                     quiet=True).stdout.split()
            check(len(out) == 1, f"expected one container for service {service}, found {out}")
            self._cids[service] = out[0]
        return self._cids[service]

    def _network(self) -> str:
        nets = json.loads(sh(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                              self.cid("tracker")], quiet=True).stdout)
        check(len(nets) == 1, f"tracker should be on exactly one network, is on {list(nets)}")
        return next(iter(nets))

    def health(self, service: str) -> str:
        p = sh(["docker", "inspect", "-f",
                "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                self.cid(service)], quiet=True, check_rc=False)
        return p.stdout.strip()

    def wait_healthy(self, services, deadline_s: float) -> None:
        def ready():
            states = {s: self.health(s) for s in services}
            bad = {s: st for s, st in states.items() if st != "running/healthy"}
            if bad:
                raise Fail(f"not healthy: {bad}")
            return True
        log(f"waiting for {', '.join(services)} to be healthy")
        poll("services healthy", ready, deadline_s, interval=1.0)

    def webserver_healthy(self) -> bool:
        return self.has_webserver and self.health("webserver") == "running/healthy"

    # -- client containers on the compose network ----------------------------
    def start_clients(self) -> None:
        uid = f"{os.getuid()}:{os.getgid()}"
        for name in ("client-a", "client-b"):
            cname = f"{self.project}-{name}"
            mounts = ["-v", f"{self.workdir}:/work"]
            if self.grpcurl:
                mounts += ["-v", f"{self.grpcurl}:/usr/local/bin/grpcurl:ro"]
            sh(["docker", "run", "-d", "--name", cname, "--label", self.label,
                "--network", self.network, "--user", uid, "-e", "HOME=/tmp",
                *mounts, "--entrypoint", "sleep", f"shoal-peer:{self.version}", "infinity"])
            self.clients.append(cname)

    def stop_clients(self) -> None:
        ids = sh(["docker", "ps", "-aq", "--filter", f"label={self.label}"],
                 check_rc=False, quiet=True).stdout.split()
        if ids:
            sh(["docker", "rm", "-fv", *ids], check_rc=False, timeout=60)
        self.clients = []

    def run_in(self, client: str, *argv: str, timeout: float = 120, check_rc: bool = True,
               quiet: bool = False, env: dict[str, str] | None = None):
        envargs = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        return sh(["docker", "exec", *envargs, f"{self.project}-{client}", *argv],
                  timeout=timeout, check_rc=check_rc, quiet=quiet)

    # -- shoal CLI ------------------------------------------------------------
    def endpoint_args(self) -> list[str]:
        if self.webserver_healthy():
            return ["--endpoint", WEBSERVER_URL]
        return ["--tracker", TRACKER_URL]

    def shoal(self, *args: str, client: str = "client-a", timeout: float = 120, check_rc=True,
              quiet: bool = False, env: dict[str, str] | None = None):
        return self.run_in(client, "shoal", *args, timeout=timeout, check_rc=check_rc, quiet=quiet,
                           env=env)

    @staticmethod
    def otel_env(client: str) -> dict[str, str]:
        """Environment that makes the CLI export its spans to the trace sink."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": OTLP_URL,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={client}"}

    def spans(self) -> list[dict]:
        """Every span the sink has written so far (a partly written last line is skipped)."""
        p = sh(["docker", "exec", self.cid(SINK), "cat", TRACE_FILE], timeout=60, quiet=True)
        out = []
        for line in p.stdout.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def shoal_json(self, *args: str, client: str = "client-a"):
        # Quiet: these run in polling loops; a failure still shows the command.
        p = self.shoal("--tracker", TRACKER_URL, *args, "--json", client=client, timeout=30,
                       quiet=True)
        try:
            return json.loads(p.stdout)
        except json.JSONDecodeError as e:
            raise Fail(f"`shoal {' '.join(args)} --json` printed no JSON: {tail(p.stdout)}") from e

    def ls(self) -> list[dict]:
        return self.shoal_json("ls")

    def stat(self, name: str) -> dict:
        return self.shoal_json("stat", name)

    def peers(self) -> list[dict]:
        return self.shoal_json("peers")

    def save_logs(self, dest: Path, name: str = "compose.log") -> None:
        dest.mkdir(parents=True, exist_ok=True)
        p = sh(self.compose + ["logs", "--no-color", "-t"], timeout=60, check_rc=False,
               env=self.env, quiet=True)
        (dest / name).write_text(p.stdout + p.stderr)


class E2E:
    def __init__(self, cluster: Cluster, big_mib: int, logdir: Path):
        self.cl = cluster
        self.logdir = logdir
        self.big_mib = big_mib
        # name -> (host path, sha256, size) of every file put so far
        self.files: dict[str, tuple[Path, str, int]] = {}
        self.victims: list[str] = []  # killed peers to start again
        self.history: list[str] = []  # every peer hurt so far

    # -- helpers ---------------------------------------------------------------
    def make_random(self, name: str, size: int) -> Path:
        path = self.cl.workdir / name
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 8 * MIB)
                f.write(os.urandom(n))
                left -= n
        os.chmod(path, 0o644)
        return path

    def put(self, name: str, size: int, client: str = "client-a", env=None) -> None:
        path = self.make_random(f"{name}.src", size)
        digest = sha256_file(path)
        t = time.monotonic()
        self.cl.shoal(*self.cl.endpoint_args(), "put", f"/work/{path.name}", "--name", name,
                      client=client, timeout=300, env=env)
        log(f"put {name} ({size // MIB} MiB) in {time.monotonic() - t:.1f}s, sha256 {digest[:16]}…")
        self.files[name] = (path, digest, size)
        listed = {f.get("name"): f for f in self.cl.ls()}
        check(name in listed, f"`shoal ls` does not list {name} after put: {sorted(listed)}")
        check(int(listed[name].get("size", -1)) == size,
              f"ls size of {name} is {listed[name].get('size')}, expected {size}")

    def ensure_big(self) -> str:
        name = "e2e-big"
        if name not in self.files:
            self.put(name, self.big_mib * MIB)
        return name

    def get_and_verify(self, name: str, client: str = "client-b", env=None) -> None:
        src, digest, size = self.files[name]
        out = self.cl.workdir / f"{name}.get"
        out.unlink(missing_ok=True)
        t = time.monotonic()
        self.cl.shoal(*self.cl.endpoint_args(), "get", name, "-o", f"/work/{out.name}",
                      client=client, timeout=300, env=env)
        got = sha256_file(out)
        log(f"get {name} in {time.monotonic() - t:.1f}s: sha256 {got[:16]}…")
        check(got == digest, f"sha256 mismatch for {name}: got {got}, want {digest} "
                             f"(size {out.stat().st_size}, want {size})")
        out.unlink()

    def file_status(self) -> dict[str, dict]:
        return {f.get("name"): f for f in self.cl.ls()}

    def all_healthy(self) -> bool:
        st = self.file_status()
        missing = [n for n in self.files if n not in st]
        check(not missing, f"ls lacks {missing}")
        bad = {n: (st[n].get("status"), st[n].get("replicas_min"), st[n].get("replicas_target"))
               for n in self.files if st[n].get("status") != "healthy"}
        check(not bad, f"not healthy (status, replicas_min, target): {bad}")
        return True

    def peer_state(self, service: str) -> str:
        for p in self.cl.peers():
            if str(p.get("addr", "")).split(":")[0] == service:
                return str(p.get("state", "")).lower()
        return "absent"

    def replica_problems(self, name: str) -> list[str]:
        """Chunks with 0 replicas, duplicate peers or more than R replicas."""
        st = self.cl.stat(name)
        r = int(st.get("replicas_target") or 0)
        check(r > 0, f"stat {name}: no replicas_target in {str(st)[:200]}")
        chunks = st.get("chunks") or []
        check(len(chunks) > 0, f"stat {name}: no chunks")
        problems = []
        for ch in chunks:
            peers = [rep.get("peer") or rep.get("addr") for rep in ch.get("replicas") or []]
            if not peers:
                problems.append(f"chunk {ch.get('index')}: 0 replicas")
            dup = [p for p, n in collections.Counter(peers).items() if n > 1]
            if dup:
                problems.append(f"chunk {ch.get('index')}: duplicate peers {dup}")
            if len(peers) > r:
                reason = ch.get("placement_reason") or ch.get("placementReason") or "?"
                problems.append(f"chunk {ch.get('index')}: {len(peers)} replicas > R={r} "
                                f"({', '.join(map(str, peers))}; last placement: {reason})")
        return problems

    def holders(self, name: str) -> collections.Counter:
        """service name -> how many chunks of the file's second half it serves first."""
        st = self.cl.stat(name)
        chunks = st.get("chunks") or []
        cnt: collections.Counter = collections.Counter()
        for ch in chunks[len(chunks) // 2:]:
            reps = ch.get("replicas") or []
            for i, rep in enumerate(reps):
                svc = str(rep.get("addr", "")).split(":")[0]
                cnt[svc] += 10 if i == 0 else 1
        return cnt

    # -- scenarios ---------------------------------------------------------------
    def s1_grpcurl(self) -> None:
        """grpcurl: reflection lists the services; Health/Check is SERVING."""
        check(self.cl.grpcurl is not None, "grpcurl not installed (deploy/scripts/e2e-tools.sh)")
        targets = [("tracker:50052", "shoal.v1.Tracker")]
        targets += [(f"{p}:50053", "shoal.v1.Peer") for p in PEERS]
        targets += [("webserver:50051", "shoal.v1.Webserver")]
        errors = []
        for addr, svc in targets:
            if addr.startswith("webserver") and not self.cl.has_webserver:
                errors.append("webserver: not deployed (no shoal-webserver image)")
                continue
            try:
                p = self.cl.run_in("client-a", "grpcurl", "-plaintext", addr, "list", timeout=30)
                listed = set(p.stdout.split())
                for want in (svc, "grpc.health.v1.Health"):
                    check(want in listed, f"{addr}: reflection list lacks {want}: {sorted(listed)}")
                p = self.cl.run_in("client-a", "grpcurl", "-plaintext", "-d", "{}", addr,
                                   "grpc.health.v1.Health/Check", timeout=30)
                status = json.loads(p.stdout).get("status")
                check(status == "SERVING", f"{addr}: Health/Check status {status!r}")
                log(f"{addr}: {svc} + grpc.health.v1.Health listed, SERVING")
            except (Fail, json.JSONDecodeError) as e:
                errors.append(str(e))
        if self.cl.has_webserver:
            # The published port answers on loopback only.
            try:
                p = sh([str(self.cl.grpcurl), "-plaintext", "-d", "{}",
                        f"127.0.0.1:{self.cl.grpc_port}", "grpc.health.v1.Health/Check"],
                       timeout=30)
                check(json.loads(p.stdout).get("status") == "SERVING",
                      f"host 127.0.0.1:{self.cl.grpc_port}: {p.stdout.strip()}")
                log(f"host 127.0.0.1:{self.cl.grpc_port} (published webserver): SERVING")
            except (Fail, json.JSONDecodeError) as e:
                errors.append(f"published port: {e}")
        check(not errors, "\n  ".join(errors))

    def s2_put_get(self) -> None:
        """Put a big random file from one container, get it from another: same sha256."""
        log(f"clients use {' '.join(self.cl.endpoint_args())}")
        name = self.ensure_big()
        self.get_and_verify(name, client="client-b")

    def s3_kill_during_get(self) -> None:
        """docker kill a peer during a get; the get completes; replication converges."""
        name = self.ensure_big()
        cnt = self.holders(name)
        check(bool(cnt), f"stat {name}: no replica addresses")
        victim = cnt.most_common(1)[0][0]
        check(victim in PEERS, f"unexpected replica host {victim!r}")
        self.victims.append(victim)
        self.history.append(victim)
        vid = self.cl.cid(victim)
        out = self.cl.workdir / f"{name}.s3"
        for f in self.cl.workdir.glob(f"{out.name}*"):
            f.unlink()
        # A CPU-limited client makes the 200 MiB get last a few seconds.
        getter = f"{self.cl.project}-getter"
        cmd = ["docker", "run", "--rm", "--name", getter, "--label", self.cl.label,
               "--network", self.cl.network, "--cpus", "0.25",
               "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp",
               "-v", f"{self.cl.workdir}:/work", "--entrypoint", "shoal",
               f"shoal-peer:{self.cl.version}", *self.cl.endpoint_args(),
               "get", name, "-o", f"/work/{out.name}"]
        log("$ " + shlex.join(cmd) + " &")
        t = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Kill as soon as the output file receives bytes (or 3 s after launch
            # if the CLI writes elsewhere first).
            def started():
                if proc.poll() is not None or time.monotonic() - t > 3:
                    return True
                return any(f.stat().st_size > 0 for f in self.cl.workdir.glob(f"*{out.name}*"))
            poll("get started writing", started, 60, interval=0.02)
            running = proc.poll() is None
            sh(["docker", "kill", vid])
            t_kill = time.monotonic()
            log(f"killed {victim} {t_kill - t:.1f}s into the get "
                f"(get still running: {running})")
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                subprocess.run(["docker", "rm", "-fv", getter], capture_output=True)
        check(running, f"the get finished before {victim} could be killed: inconclusive")
        check(proc.returncode == 0, f"get failed after killing {victim}: exit {proc.returncode}\n"
                                    f"  stdout: {tail(stdout)}\n  stderr: {tail(stderr)}")
        got = sha256_file(out)
        log(f"get finished in {time.monotonic() - t:.1f}s: sha256 {got[:16]}…")
        check(got == self.files[name][1], f"sha256 mismatch after kill: {got}")
        out.unlink()
        # The tracker declares the peer dead, then re-replicates to R.
        poll(f"tracker marks {victim} dead", lambda: "dead" in self.peer_state(victim),
             DEAD_AFTER_S + 25)
        log(f"{victim} is dead for the tracker ({time.monotonic() - t_kill:.1f}s after the kill); "
            "waiting for re-replication")
        poll("ls status healthy again after peer loss", self.all_healthy, 60)
        log(f"healthy again {time.monotonic() - t_kill:.1f}s after the kill")
        problems = self.replica_problems(name)
        if problems:
            # Say whether the extra copies are trimmed later, or stay (the check fails either way).
            t_bad = time.monotonic()
            while time.monotonic() - t_bad < 20 and self.replica_problems(name):
                time.sleep(0.5)
            left = self.replica_problems(name)
            fate = f"still there {time.monotonic() - t_bad:.0f}s later" if left else \
                f"gone {time.monotonic() - t_bad:.1f}s later"
            check(False, "after repair: " + "; ".join(problems[:10]) + f" ({fate})")
        st = self.cl.stat(name)
        r = int(st["replicas_target"])
        short = [c.get("index") for c in st.get("chunks", []) if len(c.get("replicas") or []) < r]
        check(not short, f"status healthy but chunks {short[:10]} have fewer than R={r} replicas")
        on_victim = [c.get("index") for c in st.get("chunks", [])
                     if any(str(r.get("addr", "")).startswith(victim + ":") for r in c.get("replicas") or [])]
        check(not on_victim, f"dead {victim} still listed as live replica of chunks {on_victim[:10]}")

    def restore_victims(self) -> None:
        """Bring killed peers back so the next scenario has every peer."""
        for victim in self.victims:
            if self.cl.health(victim).startswith("running"):
                continue
            sh(["docker", "start", self.cl.cid(victim)])
            self.cl.wait_healthy([victim], 60)
        self.victims = []

    def s4_partition_heal(self) -> None:
        """Partition a peer past the dead threshold, heal: no 0/duplicate/over-replicated chunks."""
        name = self.ensure_big()
        self.restore_victims()
        poll("all peers alive", lambda: all("alive" in self.peer_state(p) for p in PEERS), 30)
        cnt = self.holders(name)
        victim = next((p for p, _ in cnt.most_common() if p in PEERS and p not in self.history),
                      "peer4")
        self.history.append(victim)
        vid = self.cl.cid(victim)
        sh(["docker", "network", "disconnect", self.cl.network, vid])
        t = time.monotonic()
        try:
            poll(f"tracker marks partitioned {victim} dead",
                 lambda: "dead" in self.peer_state(victim), DEAD_AFTER_S + 25)
            log(f"{victim} dead for the tracker after {time.monotonic() - t:.1f}s of partition")
            # A small upload while the peer is cut off must avoid it.
            self.put("e2e-during-partition", 8 * MIB)
            st = self.cl.stat("e2e-during-partition")
            placed = {str(r.get("addr", "")).split(":")[0]
                      for c in st.get("chunks", []) for r in c.get("replicas") or []}
            check(victim not in placed, f"upload during partition placed chunks on dead {victim}")
            try:
                poll("re-replication during the partition", self.all_healthy, 30)
                log("files healthy again during the partition")
            except Fail as e:
                log(f"note: {e}")
        finally:
            sh(["docker", "network", "connect", "--alias", victim, self.cl.network, vid],
               check_rc=False)
        log(f"healed {victim}")
        poll(f"{victim} alive again", lambda: "alive" in self.peer_state(victim), 30)
        stable = {"n": 0, "seen": False}

        def converged():
            problems = []
            for n in self.files:
                problems += [f"{n} {p}" for p in self.replica_problems(n)]
            if problems:
                stable["n"] = 0
                msg = "; ".join(problems[:8]) + (" …" if len(problems) > 8 else "")
                if not stable["seen"]:
                    stable["seen"] = True
                    log(f"not converged yet ({len(problems)} problems): {msg}")
                raise Fail(msg)
            stable["n"] += 1
            return stable["n"] >= 2  # the same answer twice in a row
        t = time.monotonic()
        poll("replicas converge after heal (no 0, no duplicates, <= R)", converged, 60, interval=1.5)
        log(f"converged {time.monotonic() - t:.1f}s after heal")

    def _verify_all(self, why: str) -> None:
        poll(f"ls lists every file {why}",
             lambda: all(n in self.file_status() for n in self.files), 30)

        def available():
            st = self.file_status()
            bad = {n: st[n].get("status") for n in self.files if st[n].get("status") == "unavailable"}
            check(not bad, f"unavailable: {bad}")
            return True
        poll(f"files available {why}", available, 30)
        for n in self.files:
            self.get_and_verify(n, client="client-b")

    def s5_tracker_restart(self) -> None:
        """Restart the tracker with every peer up: no repair starts, no peer is judged
        dead; ls shows the files, downloads are intact."""
        self.ensure_big()
        self.converged("before the tracker restart")
        sh(["docker", "restart", "-t", "10", self.cl.cid("tracker")])
        self.cl.wait_healthy(["tracker"], 60)

        def quiet():
            repaired = self.cl.tracker_metric("shoal_tracker_repaired_chunks")
            check(repaired == 0, f"{repaired:.0f} repair copies since the tracker restarted")
            dead = self.dead_peers()
            check(not dead, f"peers judged dead after the tracker restart: {dead}")
            return True
        # Past dead_after twice: a peer judged from the store's last sighting is dead by then.
        self.hold("no repair, no dead peer after the tracker restart", quiet, 2 * DEAD_AFTER_S + 2)
        self._verify_all("after tracker restart")

    def s6_down_up(self) -> None:
        """compose down (volumes kept) and up: everything still downloadable."""
        self.ensure_big()
        self.restore_victims()
        self.cl.save_logs(self.logdir, "compose-before-down.log")
        self.cl.down(volumes=False)
        self.cl.up()
        self._verify_all("after down/up")

    def s7_bad_config(self) -> None:
        """SHOAL_CAPACITY_BYTES=abc: the peer exits 64 with one stderr line naming it."""
        name = f"{self.cl.project}-badconfig"
        cmd = ["docker", "run", "--rm", "--name", name, "--label", self.cl.label,
               "--network", "none",
               "-e", "SHOAL_CAPACITY_BYTES=abc",
               "-e", f"SHOAL_TRACKER_URL={TRACKER_URL}",
               "-e", "SHOAL_ADVERTISE_ADDR=badpeer:50053", "-e", "SHOAL_ZONE=a",
               f"shoal-peer:{self.cl.version}"]
        try:
            p = sh(cmd, timeout=30, check_rc=False)
        finally:
            subprocess.run(["docker", "rm", "-fv", name], capture_output=True)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        log(f"exit {p.returncode}, stderr: {p.stderr.strip()!r}")
        check(p.returncode == 64, f"exit code {p.returncode}, expected 64; stderr: {tail(p.stderr)}")
        check("SHOAL_CAPACITY_BYTES" in p.stderr, f"stderr does not name SHOAL_CAPACITY_BYTES: {tail(p.stderr)}")
        check(len(lines) == 1, f"stderr has {len(lines)} lines, expected 1: {tail(p.stderr)}")

    def s8_traces(self) -> None:
        """One trace per put across containers (CLI, tracker, peers, peer → peer); repair spans."""
        self.restore_victims()
        check(self.cl.health(SINK) == "running/healthy",
              f"trace sink is {self.cl.health(SINK) or 'absent'}")
        poll("all peers alive", lambda: all("alive" in self.peer_state(p) for p in PEERS), 30)
        log(f"clients use {' '.join(self.cl.endpoint_args())}, exporting to {OTLP_URL}")
        name = "e2e-traced"
        self.put(name, 6 * MIB, client="client-a", env=self.cl.otel_env("client-a"))
        self.get_and_verify(name, client="client-b", env=self.cl.otel_env("client-b"))
        st = self.cl.stat(name)
        hashes = {c.get("hash") for c in st.get("chunks") or []}
        check(bool(hashes), f"stat {name}: no chunks")

        # The put: one trace id over the CLI, the tracker and the peers.
        def put_trace() -> list[dict]:
            spans = self.cl.spans()
            roots = [sp for sp in spans if sp.get("name") == "put"
                     and (sp.get("attributes") or {}).get("file.name") == name]
            check(bool(roots), f"no `put` span with file.name={name} yet ({len(spans)} spans)")
            tid = roots[-1]["trace_id"]
            t = [sp for sp in spans if sp.get("trace_id") == tid]
            services = {sp.get("service") for sp in t}
            missing = {"shoal-cli", "shoal-tracker", "shoal-peer"} - services
            check(not missing, f"put trace {tid}: no spans from {sorted(missing)} yet "
                               f"(has {sorted(services)})")
            places = [sp for sp in t if sp.get("name") == "place"]
            check(len(places) >= len(hashes), f"put trace {tid}: {len(places)} place spans, "
                                              f"{len(hashes)} chunks")
            check(any(sp.get("name") == "fragment" for sp in t), f"put trace {tid}: no fragment span")
            check(any(sp.get("name") == "chunk.forward" for sp in t),
                  f"put trace {tid}: no chunk.forward span")
            return t
        t0 = time.monotonic()
        t = poll("the put trace (CLI, tracker, peers) in the sink's file", put_trace, 30)
        tid = t[0]["trace_id"]
        by_service = collections.Counter(sp.get("service") for sp in t)
        log(f"put trace {tid}: {len(t)} spans after {time.monotonic() - t0:.1f}s, "
            f"by service {dict(by_service)}")
        # Every service is told apart by its instance id (OTEL_RESOURCE_ATTRIBUTES).
        root = next(sp for sp in t if sp.get("name") == "put" and sp.get("service") == "shoal-cli")
        check(root.get("instance") == "client-a", f"CLI put span instance {root.get('instance')!r}")
        inst = {sp.get("instance") for sp in t if sp.get("service") == "shoal-tracker"}
        check(inst == {"tracker"}, f"tracker span instances {inst}, expected {{'tracker'}}")
        peer_inst = {sp.get("instance") for sp in t if sp.get("service") == "shoal-peer"}
        check(peer_inst <= set(PEERS) and len(peer_inst) >= 2,
              f"peer span instances {peer_inst}: expected >= 2 of {PEERS}")
        # Fragmentation decision.
        frag = next(sp for sp in t if sp.get("name") == "fragment")
        for k in ("fragment.chunk_size", "fragment.chunks", "fragment.policy"):
            check(k in frag.get("attributes", {}), f"fragment span without {k}: {frag.get('attributes')}")
        check(num(frag, "fragment.chunk_size") == int(st.get("chunk_size") or -1),
              f"fragment.chunk_size {frag['attributes'].get('fragment.chunk_size')!r}, "
              f"stat says {st.get('chunk_size')}")
        check(num(frag, "fragment.chunks") == len(hashes),
              f"fragment.chunks {frag['attributes'].get('fragment.chunks')!r}, stat says {len(hashes)}")
        # Placement decisions: one place span per chunk, each covering every zone.
        places = [sp for sp in t if sp.get("name") == "place"]
        for p in places:
            a = p.get("attributes") or {}
            for k in ("placement.chosen", "placement.zones_covered", "placement.candidates",
                      "placement.scores", "chunk.hash"):
                check(k in a, f"place span without {k}: {a}")
            check(num(p, "placement.zones_covered") == len(ZONES),
                  f"place span covers {a.get('placement.zones_covered')!r} zones, "
                  f"expected {len(ZONES)}: {a}")
        placed = {(p.get("attributes") or {}).get("chunk.hash") for p in places}
        check(placed == hashes, f"place spans cover {len(placed & hashes)} of {len(hashes)} chunks "
                                f"(extra: {sorted(placed - hashes)[:3]})")
        # Peer → peer: a chunk.put on one peer whose ancestor is a chunk.forward on another.
        by_id = {sp.get("span_id"): sp for sp in t}
        hops = set()
        for put in (sp for sp in t if sp.get("name") == "chunk.put" and sp.get("service") == "shoal-peer"):
            cur = by_id.get(put.get("parent_span_id"))
            while cur is not None:
                if cur.get("name") == "chunk.forward":
                    if cur.get("service") == "shoal-peer" and cur.get("instance") != put.get("instance"):
                        hops.add((cur.get("instance"), put.get("instance")))
                    break
                cur = by_id.get(cur.get("parent_span_id"))
        check(bool(hops), "no chunk.put on one peer under a chunk.forward on another peer")
        log(f"fragment {frag['attributes'].get('fragment.chunks')} × "
            f"{frag['attributes'].get('fragment.chunk_size')} B "
            f"(policy {frag['attributes'].get('fragment.policy')}), {len(places)} place spans, "
            f"peer → peer hops {sorted(hops)}")

        # The get: each chunk read is traced from the CLI into the peer that serves it
        # (the CLI's get has no root span: every chunk.get is a trace of its own).
        def get_traces():
            spans = self.cl.spans()
            cli = {(sp.get("attributes") or {}).get("chunk.hash"): sp.get("trace_id") for sp in spans
                   if sp.get("name") == "chunk.get" and sp.get("service") == "shoal-cli"
                   and sp.get("instance") == "client-b"}
            served = {(sp.get("trace_id"), (sp.get("attributes") or {}).get("chunk")): sp.get("instance")
                      for sp in spans if sp.get("name") == "chunk.get" and sp.get("service") == "shoal-peer"}
            by = {h: served.get((cli.get(h), h)) for h in hashes}
            missing = [h[:12] for h, peer in by.items() if peer is None]
            check(not missing, f"{len(missing)} of {len(hashes)} chunks lack a client-b chunk.get "
                               f"traced into a peer's chunk.get yet: {missing[:4]}")
            return by
        by = poll("the get's chunk reads traced from client-b into the peers", get_traces, 30)
        log(f"get: {len(by)} chunk reads traced into {dict(collections.Counter(by.values()))}")

        # Kill a peer holding chunks of the file: the tracker traces the repairs.
        ids = {p.get("id"): str(p.get("addr", "")).split(":")[0] for p in self.cl.peers()}
        cnt = collections.Counter(str(r.get("addr", "")).split(":")[0]
                                  for c in st.get("chunks") or [] for r in c.get("replicas") or [])
        victim = next((p for p, _ in cnt.most_common() if p in PEERS), "peer4")
        victim_ids = {i for i, host in ids.items() if host == victim}
        since_ns = time.time_ns() - 1_000_000_000  # the containers share the host's clock
        sh(["docker", "kill", self.cl.cid(victim)])
        self.victims.append(victim)
        self.history.append(victim)
        t_kill = time.monotonic()

        def repair():
            spans = self.cl.spans()
            found = [sp for sp in spans if sp.get("name") == "repair"
                     and int(sp.get("start_unix_nano") or 0) >= since_ns]
            check(bool(found), f"no repair span since killing {victim}")
            # The copy is traced into the target peer (another container): a
            # chunk.replicate span on repair.target's instance, in the repair's trace.
            target = {sp.get("trace_id"): ids.get((sp.get("attributes") or {}).get("repair.target"))
                      for sp in found}
            copies = {(sp.get("instance"), sp.get("name")) for sp in spans
                      if sp.get("trace_id") in target and sp.get("service") == "shoal-peer"}
            check(any(sp.get("name") == "chunk.replicate" and sp.get("service") == "shoal-peer"
                      and sp.get("instance") == target.get(sp.get("trace_id"))
                      for sp in spans),
                  f"{len(found)} repair spans, none with a chunk.replicate on its target peer yet")
            return found, copies
        try:
            found, copies = poll(f"repair spans after killing {victim}", repair, DEAD_AFTER_S + 30)
            log(f"{len(found)} repair spans {time.monotonic() - t_kill:.1f}s after the kill; "
                f"peer spans in their traces: {sorted(copies)}")
            for rp in found:
                a = rp.get("attributes") or {}
                check(rp.get("service") == "shoal-tracker",
                      f"repair span from {rp.get('service')!r}, expected shoal-tracker")
                for k in ("chunk", "repair.source", "repair.target", "repair.priority"):
                    check(k in a, f"repair span without {k}: {a}")
                check(str(a.get("repair.priority") or "") != "", f"empty repair.priority: {a}")
                for k in ("repair.source", "repair.target"):
                    check(a.get(k) not in victim_ids, f"repair {k} is the killed {victim}: {a}")
            a = found[0]["attributes"]
            log(f"repair chunk {str(a.get('chunk'))[:16]}…: "
                f"{ids.get(a.get('repair.source'), a.get('repair.source'))} → "
                f"{ids.get(a.get('repair.target'), a.get('repair.target'))} "
                f"(priority {a.get('repair.priority')}, live {a.get('repair.live_replicas')})")
        finally:
            self.restore_victims()

    # -- day two: restarts, capacity, zone loss, catalogue restore ------------------
    def restart_peer(self, peer: str) -> None:
        """Stop a peer as Kubernetes does (SIGTERM, same volume), start it, wait until the
        tracker has it alive again. While it is down the tracker must say `restarting`."""
        cid = self.cl.cid(peer)
        sh(["docker", "stop", "-t", "15", cid], quiet=True)
        state = self.peer_state(peer)
        check(state == "restarting", f"{peer} stopped with SIGTERM is {state!r} at the tracker, "
                                     "expected 'restarting'")
        sh(["docker", "start", cid], quiet=True)
        self.cl.wait_healthy([peer], 60)
        poll(f"{peer} alive again", lambda: self.peer_state(peer) == "alive", 30, interval=0.5)

    def converged(self, why: str, deadline_s: float = 90) -> None:
        """Every peer back, every file healthy with no chunk at 0, duplicated or over R."""
        self.restore_victims()
        poll("all peers alive", lambda: all(self.peer_state(p) == "alive" for p in PEERS), 60)

        def ok():
            self.all_healthy()
            problems = [f"{n} {p}" for n in self.files for p in self.replica_problems(n)]
            check(not problems, "; ".join(problems[:6]))
            return True
        poll(f"files healthy and replicas converged {why}", ok, deadline_s, interval=1.5)

    def hold(self, what: str, fn, seconds: float, interval: float = 0.5) -> None:
        """fn() must stay truthy (not raise Fail) at every look for `seconds`."""
        end = time.monotonic() + seconds
        looks = 0
        while True:
            if not fn():
                raise Fail(f"{what}: broken after {looks} looks")
            looks += 1
            if time.monotonic() >= end:
                return
            time.sleep(interval)

    def dead_peers(self) -> dict[str, float]:
        return {k: v for k, v in self.cl.metrics("tracker", 9102).items()
                if k.startswith("shoal_tracker_peers{") and 'state="dead"' in k and v > 0}

    def s9_rolling_restart(self) -> None:
        """Every peer restarted in turn (SIGTERM, same volume) under a get loop and a put loop:
        no failed operation, no repair copy, no peer ever dead."""
        self.converged("before the rolling restart")
        loop_file = "e2e-rolling"
        if loop_file not in self.files:
            self.put(loop_file, 16 * MIB)
        repaired0 = self.cl.tracker_metric("shoal_tracker_repaired_chunks")
        stop = threading.Event()
        ops: collections.Counter = collections.Counter()
        failures: list[str] = []
        dead_seen: list[dict] = []

        def guard(kind: str, fn) -> None:
            try:
                fn()
                ops[kind] += 1
            except Fail as e:
                failures.append(f"{kind}: {e}")

        def get_loop():
            while not stop.is_set():
                guard("get", lambda: self.get_and_verify(loop_file, client="client-b"))

        def put_loop():
            i = 0
            while not stop.wait(1.0):
                i += 1
                guard("put", lambda: self.put(f"e2e-rolling-{i}", 1 * MIB))

        def watch_loop():
            while not stop.wait(0.25):
                try:
                    dead = self.dead_peers()
                except Fail:
                    continue
                if dead:
                    dead_seen.append(dead)
        threads = [threading.Thread(target=f, daemon=True) for f in (get_loop, put_loop, watch_loop)]
        for th in threads:
            th.start()
        t = time.monotonic()
        try:
            for peer in PEERS:
                t1 = time.monotonic()
                self.restart_peer(peer)
                log(f"{peer} restarted and alive in {time.monotonic() - t1:.1f}s")
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=300)
        log(f"rolling restart of {len(PEERS)} peers in {time.monotonic() - t:.1f}s: "
            f"{ops['get']} gets, {ops['put']} puts, {len(failures)} failed")
        check(not failures, f"{len(failures)} operations failed: " + " | ".join(failures[:3]))
        check(ops["get"] > 0 and ops["put"] > 0, f"the loops did not run: {dict(ops)}")
        check(not dead_seen, f"the tracker reported a dead peer: {dead_seen[:3]}")
        self.converged("after the rolling restart")
        repaired = self.cl.tracker_metric("shoal_tracker_repaired_chunks") - repaired0
        check(repaired == 0, f"the rolling restart made {repaired:.0f} repair copies, expected 0")

    def s10_capacity(self) -> None:
        """peer5 (its own ext4 volume, filled to about half) restarts: the free space it
        advertises is the volume's within 1 %."""
        vol = self.cl.peer5_volume
        check(vol is not None, "peer5 has no volume of its own (the loop mount failed)")
        self.converged("before filling peer5")

        def used() -> float:
            st = os.statvfs(vol)
            return 1 - st.f_bavail / st.f_blocks
        # Zone c is peer5 alone: every chunk put has a copy there.
        for i in range(8):
            if used() >= 0.4:
                break
            self.put(f"e2e-fill-{i}", 48 * MIB)
        check(0.3 <= used() <= 0.8, f"peer5's volume is {used():.0%} used, expected about half")
        log(f"peer5's volume is {used():.0%} used; restarting it")
        self.restart_peer("peer5")

        def advertised():
            me = [p for p in self.cl.peers() if str(p.get("addr", "")).split(":")[0] == "peer5"]
            check(len(me) == 1, f"peers lists {len(me)} entries for peer5")
            adv = int(me[0]["capacity_bytes"]) - int(me[0]["used_bytes"])
            st = os.statvfs(vol)
            free = st.f_bavail * st.f_frsize
            check(abs(adv - free) <= 0.01 * free,
                  f"peer5 advertises {adv / MIB:.1f} MiB free, its volume has {free / MIB:.1f} MiB "
                  f"(used {int(me[0]['used_bytes']) / MIB:.1f} MiB, capacity "
                  f"{int(me[0]['capacity_bytes']) / MIB:.1f} MiB)")
            return adv, free
        adv, free = poll("peer5 advertises its volume's free space", advertised, 30)
        log(f"peer5 advertises {adv / MIB:.1f} MiB free; the volume has {free / MIB:.1f} MiB")

    def s11_zone_loss(self) -> None:
        """Every peer of zone b stopped: every file stays readable; after the restart grace
        the copies are rebuilt in zones a and c and `shoal info` shows 0 under-replicated."""
        self.converged("before the zone loss")
        lost = ZONES["b"]
        repaired0 = self.cl.tracker_metric("shoal_tracker_repaired_chunks")
        t = time.monotonic()
        try:
            for peer in lost:
                sh(["docker", "stop", "-t", "15", self.cl.cid(peer)])
            for name in self.files:
                self.get_and_verify(name, client="client-b")
            log(f"every file read with zone b down ({time.monotonic() - t:.1f}s after the stop)")

            def rebuilt():
                info = self.cl.shoal_json("info")
                check(int(info.get("under_replicated_chunks", -1)) == 0
                      and int(info.get("lost_chunks", -1)) == 0,
                      f"info: {info.get('under_replicated_chunks')} under-replicated, "
                      f"{info.get('lost_chunks')} lost")
                self.all_healthy()
                for name in self.files:
                    for c in self.cl.stat(name).get("chunks") or []:
                        hosts = {str(r.get("addr", "")).split(":")[0] for r in c.get("replicas") or []}
                        check(not hosts & set(lost), f"{name} chunk {c.get('index')} listed on {hosts}")
                return True
            poll("copies rebuilt outside zone b", rebuilt, RESTART_GRACE_S + 120, interval=2)
            repaired = self.cl.tracker_metric("shoal_tracker_repaired_chunks") - repaired0
            log(f"rebuilt {time.monotonic() - t:.1f}s after the zone went down: "
                f"{repaired:.0f} repair copies, 0 under-replicated")
            check(repaired > 0, "no repair copy was made for the lost zone")
        finally:
            for peer in lost:
                sh(["docker", "start", self.cl.cid(peer)], check_rc=False)
            self.cl.wait_healthy(lost, 60)
        self.converged("after zone b came back", 120)

    def s12_restore(self) -> None:
        """Back up the catalogue while serving, destroy the tracker's volume, restore,
        restart: every file byte-identical through `shoal get`."""
        self.converged("before the backup")
        ids = {n: self.cl.stat(n).get("id") for n in self.files}
        tracker = self.cl.cid("tracker")
        sh(["docker", "exec", tracker, "shoal-tracker", "backup", "/var/lib/shoal/e2e.backup"])
        bdir = self.cl.workdir / "backup"
        bdir.mkdir(exist_ok=True)
        sh(["docker", "cp", f"{tracker}:/var/lib/shoal/e2e.backup", str(bdir / "e2e.backup")])
        os.chmod(bdir, 0o755)
        os.chmod(bdir / "e2e.backup", 0o644)
        volume = f"{self.cl.project}_tracker-data"
        self.cl.c("rm", "-s", "-f", "tracker")
        self.cl._cids.pop("tracker", None)
        sh(["docker", "volume", "rm", volume])
        log(f"tracker and its volume {volume} destroyed")
        self.cl.c("up", "--no-start", "--no-deps", "tracker")
        sh(["docker", "run", "--rm", "--label", self.cl.label, "--network", "none",
            "-v", f"{volume}:/var/lib/shoal", "-v", f"{bdir}:/backup:ro",
            "-e", "SHOAL_DATA_DIR=/var/lib/shoal",
            f"shoal-tracker:{self.cl.version}", "restore", "/backup/e2e.backup"])
        self.cl.c("up", "-d", "--no-deps", "tracker")
        self.cl.wait_healthy(["tracker"], 60)
        poll("every peer registered with the restored tracker",
             lambda: all(self.peer_state(p) == "alive" for p in PEERS), 60)
        self._verify_all("after the restore")
        after = {n: self.cl.stat(n).get("id") for n in self.files}
        check(after == ids, f"content ids changed by the restore: "
                            f"{[n for n in ids if ids[n] != after.get(n)][:5]}")

    def s13_big_web_upload(self) -> None:
        """A 2 GiB upload through the webserver's HTTP gateway (curl, a multipart form)
        while the webserver's only writable space is 256 MiB of tmpfs on a read-only
        root: stored byte for byte, read back with `shoal get`, and the webserver's peak
        RSS (VmHWM) stays under 128 MiB."""
        mib = int(os.environ.get("SHOAL_E2E_WEB_UPLOAD_MIB", "2048"))
        cid = self.cl.cid("webserver")
        ro = sh(["docker", "inspect", "-f", "{{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.Tmpfs}}",
                 cid]).stdout.strip()
        check(ro.startswith("true") and "size=256m" in ro,
              f"the webserver's writable space is not 256 MiB of tmpfs on a read-only root: {ro}")
        pid = sh(["docker", "inspect", "-f", "{{.State.Pid}}", cid]).stdout.strip()

        def peak_kib() -> int:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
            raise Fail(f"no VmHWM in /proc/{pid}/status")
        before = peak_kib()
        name = "e2e-web-big"
        path = self.make_random(f"{name}.src", mib * MIB)
        digest = sha256_file(path)
        t = time.monotonic()
        r = sh(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                "-F", f"name={name}", "-F", f"file=@{path};type=application/octet-stream",
                f"http://127.0.0.1:{self.cl.http_port}/upload"], timeout=900)
        secs = time.monotonic() - t
        code = r.stdout.strip().split(" ")[0]
        check(code == "303", f"the upload answered {r.stdout.strip()} (want 303); "
                             f"webserver log:\n{tail(self.cl.c('logs', '--tail', '20', 'webserver', check_rc=False).stdout)}")
        peak = peak_kib()
        tmp = sh(["docker", "exec", cid, "df", "-k", "/tmp"], check_rc=False).stdout.strip().splitlines()
        log(f"web upload of {mib} MiB in {secs:.1f}s ({mib / secs:.0f} MiB/s); webserver peak RSS "
            f"{before // 1024} MiB before, {peak // 1024} MiB after; /tmp: {tmp[-1] if tmp else '?'}")
        check(peak < 128 * 1024, f"the webserver's peak RSS reached {peak // 1024} MiB (limit 128 MiB)")
        self.files[name] = (path, digest, mib * MIB)
        self.get_and_verify(name)
        # Give the space back for whatever runs next.
        self.cl.shoal(*self.cl.endpoint_args(), "rm", name)
        del self.files[name]
        path.unlink()


def num(span: dict, key: str) -> int | None:
    """A numeric span attribute (u64 values travel as strings in OTLP)."""
    v = (span.get("attributes") or {}).get(key)
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return int(v)
    try:
        return int(str(v))
    except ValueError:
        return None


SCENARIOS = [
    (1, "grpcurl reflection + health", "s1_grpcurl"),
    (2, "put/get 200 MiB across containers", "s2_put_get"),
    (3, "kill a peer during get + repair", "s3_kill_during_get"),
    (4, "partition + heal, no over-replication", "s4_partition_heal"),
    (5, "tracker restart", "s5_tracker_restart"),
    (6, "down/up with volumes kept", "s6_down_up"),
    (7, "bad config exits 64", "s7_bad_config"),
    (8, "traces across containers", "s8_traces"),
    (9, "rolling restart moves no data", "s9_rolling_restart"),
    (10, "restarted peer advertises its volume", "s10_capacity"),
    (11, "zone loss: readable, then rebuilt", "s11_zone_loss"),
    (12, "catalogue backup, volume lost, restore", "s12_restore"),
    (13, "2 GiB web upload, 256 MiB writable, RSS < 128 MiB", "s13_big_web_upload"),
]


def print_summary(results, out: Path | None) -> str:
    w = max(len(f"{n} {t}") for n, t, _ in SCENARIOS)
    lines = [f"{'scenario':<{w}}  result  seconds", f"{'-' * w}  ------  -------"]
    for (num, title), (res, secs, _) in results.items():
        lines.append(f"{f'{num} {title}':<{w}}  {res:<6}  {secs:7.1f}")
    passed = sum(1 for r, _, _ in results.values() if r == "PASS")
    failed = sum(1 for r, _, _ in results.values() if r == "FAIL")
    fails = [(k, m) for k, (r, _, m) in results.items() if r == "FAIL"]
    text = "\n".join(lines)
    if fails:
        text += "\n\nfailures:\n" + "\n".join(f"  {n} {t}: {m}" for (n, t), m in fails)
    text += f"\n\n{passed} passed, {failed} failed"
    print("\n" + text, flush=True)
    if out:
        out.write_text(text + "\n")
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", default=f"shoal-e2e-{os.getpid()}-{secrets.token_hex(2)}")
    ap.add_argument("--version", default=os.environ.get("SHOAL_VERSION", "latest"))
    ap.add_argument("--only", default="", help="comma-separated scenario numbers")
    ap.add_argument("--keep", action="store_true", help="do not tear the cluster down")
    args = ap.parse_args()

    big_mib = int(os.environ.get("SHOAL_E2E_BIG_MIB", "200"))
    SCENARIOS[1] = (2, f"put/get {big_mib} MiB across containers", "s2_put_get")
    only = {int(x) for x in args.only.split(",") if x.strip()}
    selected = [s for s in SCENARIOS if not only or s[0] in only]
    for svc in ("tracker", "peer"):
        if not image_exists(f"shoal-{svc}:{args.version}"):
            print(f"image shoal-{svc}:{args.version} is missing: run `make images` first", file=sys.stderr)
            return 2

    grpcurl = os.environ.get("SHOAL_E2E_GRPCURL")
    if not grpcurl:
        p = subprocess.run([str(ROOT / "deploy/scripts/e2e-tools.sh")], capture_output=True, text=True)
        grpcurl = p.stdout.strip() if p.returncode == 0 else ""
        if not grpcurl:
            log(f"grpcurl unavailable: {p.stderr.strip()}")
    grpcurl_path = Path(grpcurl).resolve() if grpcurl else None

    # Chaos tests raise; SIGTERM must also reach the teardown below.
    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    logdir = ROOT / ".cache" / "e2e" / args.project
    workdir = Path(tempfile.mkdtemp(prefix=f"{args.project}-"))
    os.chmod(workdir, 0o755)
    cluster = Cluster(args.project, args.version, workdir, grpcurl_path)
    e2e = E2E(cluster, big_mib, logdir)
    # Keep the logs of the last 10 runs only.
    runs = sorted((d for d in logdir.parent.glob("shoal-e2e-*") if d.is_dir()),
                  key=lambda d: d.stat().st_mtime)
    for old in runs[:-9]:
        shutil.rmtree(old, ignore_errors=True)
    results: dict = {}
    log(f"project {args.project}, images :{args.version}, compose `{' '.join(compose_cmd())}`, "
        f"webserver on 127.0.0.1:{cluster.grpc_port}/{cluster.http_port}")
    try:
        up_err = None
        t = time.monotonic()
        try:
            cluster.mount_peer5_volume(int(os.environ.get("SHOAL_E2E_PEER5_MIB", "512")))
            cluster.up()
            log(f"cluster up in {time.monotonic() - t:.1f}s")
        except Fail as e:
            up_err = f"cluster did not come up: {e}"
            log(up_err)
        for num, title, meth in selected:
            key = (num, title)
            if up_err:
                results[key] = ("FAIL", 0.0, up_err)
                continue
            log(f"=== scenario {num}: {title}")
            t = time.monotonic()
            try:
                getattr(e2e, meth)()
                results[key] = ("PASS", time.monotonic() - t, "")
                log(f"=== scenario {num}: PASS ({time.monotonic() - t:.1f}s)")
            except Fail as e:
                results[key] = ("FAIL", time.monotonic() - t, str(e))
                log(f"=== scenario {num}: FAIL ({time.monotonic() - t:.1f}s)\n{e}")
            except Exception as e:  # a bug in this script is a failure too
                results[key] = ("FAIL", time.monotonic() - t, f"{type(e).__name__}: {e}")
                log(f"=== scenario {num}: FAIL\n{traceback.format_exc()}")
    except KeyboardInterrupt:
        log("interrupted")
        for num, title, _ in selected:
            results.setdefault((num, title), ("FAIL", 0.0, "interrupted"))
    finally:
        try:
            cluster.save_logs(logdir)
            log(f"container logs saved to {logdir / 'compose.log'}")
        except Exception as e:  # noqa: BLE001 - best effort
            log(f"could not save logs: {e}")
        if args.keep:
            log(f"--keep: cluster left up; tear down with: "
                f"{' '.join(cluster.compose)} down -v --remove-orphans")
        else:
            try:
                cluster.down(volumes=True, fast=True)
            except Fail as e:
                log(f"teardown problem, retrying: {e}")
                cluster.stop_clients()
                cluster.c("down", "-v", "--remove-orphans", "-t", "1", check_rc=False)
        if not args.keep:
            cluster.unmount_peer5_volume()
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(results, logdir / "summary.txt")
    log(f"total {time.monotonic() - T0:.1f}s")
    return 0 if results and all(r == "PASS" for r, _, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
