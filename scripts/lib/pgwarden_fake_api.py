"""The testkit's fake Kubernetes API server as a process (`pgwarden-test-apiserver`): starting
and stopping it, laying and clearing its faults over its control endpoint, reading objects, and
a watcher that records every change of the `-rw` EndpointSlice with the monotonic time it was
seen. Used by `scripts/bench-lease-stalls`.

Python 3 standard library only. Functions that can fail raise `Failure(message, hint)`.
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

from pgwarden_local import REPO_ROOT, Failure, http_json, info, signal_pid, wait_gone

APISERVER_BIN = os.path.join(REPO_ROOT, "target", "debug", "pgwarden-test-apiserver")
# The fake API server is part of the testkit: it exists only in builds with the `testkit` feature.
APISERVER_BUILD = ["cargo", "build", "-p", "instance-manager", "--features", "testkit", "--bin",
                   "pgwarden-test-apiserver"]
SLICE_POLL = 0.02


def resolve_apiserver(path=None, build=True):
    """--apiserver PATH, else target/debug/pgwarden-test-apiserver, built with the `testkit`
    feature first (incremental: cheap when up to date) unless `build` is false and it exists."""
    if path:
        path = os.path.abspath(path)
        if not os.access(path, os.X_OK):
            raise Failure(f"--apiserver {path}: not an executable file",
                          f"build it with `{' '.join(APISERVER_BUILD)}` (target/debug/pgwarden-test-apiserver)")
        return path
    if build or not os.access(APISERVER_BIN, os.X_OK):
        if shutil.which("cargo") is None:
            raise Failure("cargo is not on PATH, so the test API server cannot be built",
                          "install Rust (https://rustup.rs), or pass --apiserver PATH to use a built binary")
        info("+ " + " ".join(APISERVER_BUILD))
        res = subprocess.run(APISERVER_BUILD, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        if res.returncode != 0:
            raise Failure(f"`{' '.join(APISERVER_BUILD)}` failed with exit code {res.returncode}",
                          f"run it in {REPO_ROOT} to see the full output")
    if not os.access(APISERVER_BIN, os.X_OK):
        raise Failure(f"{APISERVER_BIN}: no test API server binary there",
                      f"build it: `{' '.join(APISERVER_BUILD)}` (or pass --apiserver PATH)")
    return APISERVER_BIN


class FakeApi:
    """A running `pgwarden-test-apiserver`; `stop()` ends it."""

    def __init__(self, binary, namespace, pods):
        cmd = [binary, "--namespace", namespace] + [a for p in pods for a in ("--pod", p)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        line = self.proc.stdout.readline()
        try:
            doc = json.loads(line)
        except ValueError:
            self.stop()
            raise Failure(f"{binary} did not print its address (got {line!r})") from None
        self.url, self.kubeconfig, self.namespace = doc["url"], doc["kubeconfig"], doc["namespace"]

    def stop(self):
        if self.proc.poll() is None:
            signal_pid(self.proc.pid, signal.SIGTERM)
            if not wait_gone(self.proc.pid, 5, child=self.proc):
                signal_pid(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)

    def _send(self, method, path, doc=None):
        data = json.dumps(doc).encode() if doc is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read() or b"{}")
        except (urllib.error.URLError, OSError) as e:
            raise Failure(f"{method} {self.url}{path}: {e}", "is pgwarden-test-apiserver still running?") from None

    def fault(self, fault, seconds=None, verbs="all", resource=None):
        """Lays `fault` ({"kind": "stall"}, {"kind": "status", ...}, {"kind": "reset"}) for `seconds`."""
        doc = {"fault": fault, "verbs": verbs, "resource": resource, "seconds": seconds}
        return self._send("POST", "/testkit/faults", doc)["id"]

    def clear_faults(self):
        self._send("DELETE", "/testkit/faults")

    def path(self, resource, name):
        group = {"leases": "apis/coordination.k8s.io/v1", "endpointslices": "apis/discovery.k8s.io/v1",
                 "pods": "api/v1"}[resource]
        return f"/{group}/namespaces/{self.namespace}/{resource}/{name}"

    def get(self, resource, name):
        status, doc, _ = http_json(self.url + self.path(resource, name), timeout=2)
        return doc if status == 200 else None


def routed(slice_doc):
    """(addresses, term) of an EndpointSlice document."""
    if not slice_doc:
        return (), None
    addresses = tuple(a for e in slice_doc.get("endpoints") or [] for a in e.get("addresses") or [])
    term = ((slice_doc.get("metadata") or {}).get("annotations") or {}).get("pgwarden.io/term")
    return addresses, term


class SliceWatcher:
    """Polls the `-rw` EndpointSlice every 20 ms; `changes` is [(monotonic time, addresses, term)]."""

    def __init__(self, api, name):
        self.api, self.name = api, name
        self.changes = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="slice-watcher")
        self.thread.start()

    def _run(self):
        last = None
        while not self.stop_ev.is_set():
            seen = routed(self.api.get("endpointslices", self.name))
            if seen != last:
                with self.lock:
                    self.changes.append((time.monotonic(), seen[0], seen[1]))
                last = seen
            self.stop_ev.wait(SLICE_POLL)

    def first(self, after, addresses):
        """When the slice first named exactly `addresses` after `after` (monotonic), or None."""
        with self.lock:
            return next((t for t, a, _ in self.changes if t > after and a == tuple(addresses)), None)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(timeout=2)
