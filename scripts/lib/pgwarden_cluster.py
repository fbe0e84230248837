"""A pgwarden HA cluster as local processes: the cluster directory, the instances' configurations
(a file lease shared by all of them, every member listed), starting and stopping managers, and
asking their HTTP APIs who is primary. Shared by `scripts/local-cluster` and `scripts/bench-failover`.

Python 3 standard library only. Functions that can fail raise `Failure(message, hint)`.
"""

import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time

import pgwarden_tls
from pgwarden_backup import backup_section, recovery_section
from pgwarden_local import (
    Failure, config_problems, http_get, http_json, info, pid_alive, port_free, postmaster_pid, read_pidfile,
    signal_pid, stop_stray_postmaster, tail, wait_gone, who_listens, write_config_file, write_private,
)

STATE_FILE = "cluster.json"
LEASE_FILE = "lease.json"
CLUSTER_NAME = "local"
HOST = "127.0.0.1"
APP_USER = "app"
APP_DB = "app"
SECRETS = {"superuser": "superuser.password", "app": "app.password", "replication": "replication.password",
           "api_token": "api.token"}
# Written only when `up` was given their values (S3 keys from AWS_* variables), never generated.
GIVEN_SECRETS = {"s3_access_key_id": "s3-access-key-id", "s3_secret_access_key": "s3-secret-access-key"}
# Shutdown escalation written into each config: sessions get a moment, then a fast shutdown.
SMART_TIMEOUT = 5
STOP_TIMEOUT = 20

# Lease timing (seconds), docs/architecture.md §4.2: the defaults, and a fast profile for clusters whose lease
# store always answers within a second (a file on one host does).
TIMING_KEYS = ("lease_duration", "renew_deadline", "retry_period", "fence_budget")
DEFAULT_TIMING = {"lease_duration": 15, "renew_deadline": 10, "retry_period": 2, "fence_budget": 2}
FAST_TIMING = {"lease_duration": 5, "renew_deadline": 3, "retry_period": 1, "fence_budget": 1.5}
TIMING_FIELDS = {"lease_duration": "leaseDurationSeconds", "renew_deadline": "renewDeadlineSeconds",
                 "retry_period": "retryPeriodSeconds", "fence_budget": "fenceBudgetSeconds"}


TIMING_OPTIONS = {"lease_duration": "--lease-duration", "renew_deadline": "--renew-deadline",
                  "retry_period": "--retry-period", "fence_budget": "--fence-budget"}


def as_flags(text):
    """The manager's complaint about a lease timing, in the words of `up`'s options: the user typed
    --lease-duration, not lease.leaseDurationSeconds."""
    for key, field in TIMING_FIELDS.items():
        text = text.replace(f"lease.{field}", TIMING_OPTIONS[key])
    return text


def num(x):
    """15.0 -> '15', 1.5 -> '1.5' (messages)."""
    return f"{x:g}"


def timing_str(t):
    return "/".join(num(t[k]) for k in TIMING_KEYS)


class Cluster:
    """The cluster directory and what was decided at creation (cluster.json).

    `cmd` is how hints tell the user to call the owning script again (e.g. `scripts/local-cluster`)."""

    def __init__(self, directory, cmd="scripts/local-cluster"):
        self.dir = os.path.abspath(directory)
        self.cmd = cmd
        self.state = None
        # {GIVEN_SECRETS key: value} that `write_secrets` writes when the file is missing.
        self.given_secrets = {}

    # -- state --
    @property
    def state_path(self):
        return os.path.join(self.dir, STATE_FILE)

    @property
    def lease_path(self):
        return os.path.join(self.dir, LEASE_FILE)

    def exists(self):
        return os.path.exists(self.state_path)

    def load(self):
        if not self.exists():
            raise Failure(f"no local cluster in {self.dir} (no {STATE_FILE})", f"start one with `{self.cmd} up`")
        try:
            with open(self.state_path) as f:
                self.state = json.load(f)
        except ValueError as e:
            raise Failure(f"{self.state_path} is not valid JSON: {e}",
                          f"`{self.cmd} down --purge` and `up` again") from None
        if self.state.get("tls"):
            pgwarden_tls.trust(self.dir)
        return self

    def save(self):
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.state_path)

    @property
    def legacy(self):
        """A cluster created by the static-role version of local-cluster (pg-1 primary by config)."""
        return "lease" not in self.state

    @property
    def instances(self):
        return self.state["instances"]

    def instance(self, name):
        for inst in self.instances:
            if inst["name"] == name:
                return inst
        names = ", ".join(i["name"] for i in self.instances)
        raise Failure(f"no instance named {name!r} in {self.dir}", f"instances: {names}")

    # -- paths --
    def secret_path(self, which):
        return os.path.join(self.dir, "secrets", SECRETS.get(which) or GIVEN_SECRETS[which])

    def inst_dir(self, inst):
        return os.path.join(self.dir, inst["name"])

    def config_path(self, inst):
        return os.path.join(self.inst_dir(inst), "config.yaml")

    def log_path(self, inst):
        return os.path.join(self.inst_dir(inst), "manager.log")

    def pid_path(self, inst):
        return os.path.join(self.inst_dir(inst), "manager.pid")

    def data_dir(self, inst):
        return os.path.join(self.inst_dir(inst), "pgdata")

    def run_dir(self, inst):
        return os.path.join(self.inst_dir(inst), "run")

    def socket_url(self, inst):
        """The manager's local socket: mutating CLI commands need no token there."""
        return "unix://" + os.path.join(self.run_dir(inst), "manager.sock")

    @staticmethod
    def api_url(inst):
        return f"{'https' if inst.get('tls') else 'http'}://{HOST}:{inst['api_port']}"

    def manager_pid(self, inst):
        """Pid of the instance's running manager, None when it is down. The command line must
        name this instance's config, so a recycled pid is not mistaken for it."""
        pid = read_pidfile(self.pid_path(inst))
        if pid and pid_alive(pid, must_contain=[self.config_path(inst)]):
            return pid
        return None

    def read_secret(self, which):
        try:
            with open(self.secret_path(which)) as f:
                return f.read().strip()
        except FileNotFoundError:
            raise Failure(f"secret file {self.secret_path(which)} is missing",
                          f"`{self.cmd} up` recreates missing secrets "
                          "(an existing cluster keeps its old password for that user)") from None

    def read_lease_file(self):
        """The lease record as the file backend stores it ({"record": {...}}), or None — also
        when an instance's configuration was switched to another backend (a lease.json left
        behind then is stale: the instances' /status documents say the truth)."""
        for inst in self.instances:
            try:
                with open(self.config_path(inst)) as f:
                    # JSON as `up` writes it, or YAML edited by hand.
                    if re.search(r"""^\s*"?backend"?\s*:\s*"?kubernetes\b""", f.read(), re.M):
                        return None
            except OSError:
                pass
        try:
            with open(self.lease_path) as f:
                doc = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        rec = doc.get("record") if isinstance(doc, dict) else None
        return rec if isinstance(rec, dict) else None

    def log_excerpt(self, inst, n=12):
        lines = tail(self.log_path(inst), n)
        if not lines:
            return f"\n  ({self.log_path(inst)} is empty)"
        return f"\n  last lines of {self.log_path(inst)}:\n" + "\n".join("    " + line[:300] for line in lines)


# --- creation ---------------------------------------------------------------------------------

def new_state(instances, pg_ports, api_ports, timing, synchronous, base_port=None, api_base_port=None,
              name=CLUSTER_NAME, archive=None, recovery=None):
    """What cluster.json holds. `archive`: the StoreSpec WAL and backups go to (None: no
    archive); `recovery`: the bootstrap.recovery spec of a cluster restored from a backup."""
    return {
        "cluster": name,
        "archive": archive,
        "recovery": recovery,
        "base_port": base_port,
        "api_base_port": api_base_port,
        "lease": {k: timing[k] for k in TIMING_KEYS},
        "synchronous": synchronous,
        "instances": [new_instance(i, pg_ports[i - 1], api_ports[i - 1]) for i in range(1, instances + 1)],
    }


def new_instance(i, pg_port, api_port):
    return {"name": f"pg-{i}", "pg_port": pg_port, "api_port": api_port}


def metrics_port(inst):
    """The instance's Prometheus port: its API port + 1186 (pg-1: 19187, like CloudNativePG's 9187).
    A taken metrics port only costs the metrics: the manager logs it and runs on."""
    return inst.get("metrics_port") or inst["api_port"] + METRICS_OFFSET


METRICS_OFFSET = 1186  # an instance's metrics port: its API port + 1186 (pg-1: 19187, like 9187)


def cluster_ports(pg_base, api_base, n):
    """Every TCP port an n-instance cluster with these base ports listens on."""
    return [b + i for b in (pg_base, api_base, api_base + METRICS_OFFSET) for i in range(n)]


def free_bases(n, start_pg=25432, start_api=28001, step=100, tries=50, is_free=None):
    """The first (Postgres base, API base) from (start_pg, start_api) on, `step` apart, whose
    Postgres, API and metrics ports are all free now; None when none of `tries` is."""
    is_free = is_free or (lambda port: port_free(port, HOST))
    for k in range(tries):
        pg, api = start_pg + k * step, start_api + k * step
        if api + METRICS_OFFSET + n - 1 > 65535:
            return None
        if all(is_free(p) for p in cluster_ports(pg, api, n)):
            return pg, api
    return None


def other_ports_hint(n, is_free=None):
    """`up --base-port P --api-base-port A` with ports that are free now, or a fallback."""
    found = free_bases(n, is_free=is_free)
    if found is None:
        return "`up --base-port PORT --api-base-port PORT` with free ports (`ss -ltn` lists the taken ones)"
    return f"`up --base-port {found[0]} --api-base-port {found[1]}` (those ports are free now)"


def check_ports(cluster, inst, hint=None):
    """Fails clearly when another process holds a port this (dead) instance needs."""
    for port, what in ((inst["pg_port"], "Postgres"), (inst["api_port"], "HTTP API")):
        if not port_free(port, HOST):
            holder = who_listens(port) or "another process"
            raise Failure(f"port {port} ({what} of {inst['name']}) is already in use by {holder}",
                          hint or "stop that process, or use other ports")


def write_secrets(cluster):
    sdir = os.path.join(cluster.dir, "secrets")
    os.makedirs(sdir, mode=0o700, exist_ok=True)
    os.chmod(sdir, 0o700)
    for which in SECRETS:
        path = cluster.secret_path(which)
        if not os.path.exists(path):  # never rewrite: the running cluster uses them
            write_private(path, secrets.token_urlsafe(24) + "\n")
    for which, value in cluster.given_secrets.items():
        if not os.path.exists(cluster.secret_path(which)):
            write_private(cluster.secret_path(which), value + "\n")


def config_doc(cluster, inst, bin_dir):
    """The InstanceConfig of one member of an HA cluster, as data (InstanceConfig's camelCase
    keys): no role, every member listed, the lease file shared by all."""
    st = cluster.state
    postgres = {"port": inst["pg_port"], "listenAddresses": HOST, "parameters": {"shared_buffers": "64MB"}}
    api = {"listen": f"{HOST}:{inst['api_port']}"}
    if st.get("tls"):
        postgres.update(pgwarden_tls.postgres_tls(cluster.dir))
        api["tls"] = pgwarden_tls.api_tls(cluster.dir)
    api["tokenFile"] = cluster.secret_path("api_token")
    bootstrap = {"database": APP_DB, "owner": APP_USER}
    recovery = recovery_section(st.get("recovery"), cluster.secret_path)
    if recovery:
        bootstrap["recovery"] = recovery
    doc = {
        "name": inst["name"],
        "cluster": st["cluster"],
        "dataDir": cluster.data_dir(inst),
        "runDir": cluster.run_dir(inst),
        "binDir": bin_dir,
        "postgres": postgres,
        "api": api,
        "metrics": {"listen": f"{HOST}:{metrics_port(inst)}"},
        "bootstrap": bootstrap,
        "credentials": {
            "superuserPasswordFile": cluster.secret_path("superuser"),
            "appPasswordFile": cluster.secret_path("app"),
            "replicationPasswordFile": cluster.secret_path("replication"),
        },
        "shutdown": {"smartTimeoutSeconds": SMART_TIMEOUT, "stopTimeoutSeconds": STOP_TIMEOUT},
        # The file shared by the members, unless the state names another backend (bench-lease-stalls:
        # {"backend": "kubernetes", "failsafe": ...}).
        "lease": dict(st.get("lease_backend") or {"backend": "file", "path": cluster.lease_path},
                      **{TIMING_FIELDS[k]: st["lease"][k] for k in TIMING_KEYS}),
        "members": [{"name": m["name"], "host": HOST, "port": m["pg_port"], "api": Cluster.api_url(m)}
                    for m in cluster.instances],
    }
    if st.get("synchronous"):
        doc["synchronous"] = {"number": st["synchronous"]}
    backup = backup_section(st.get("archive"), cluster.secret_path)
    if backup:
        doc["backup"] = backup
    return doc


def config_comments(cluster, inst):
    """The comment lines above an instance's config.yaml."""
    return [
        f"InstanceConfig of {inst['name']}, written by {cluster.cmd.split()[0]} up as JSON (which is YAML):",
        "`instance-manager config print <this file>` shows it with every default filled in,",
        "`instance-manager config check <this file>` checks an edit. Postgres settings are applied on save",
        "(reload); manager settings (ports, dirs, lease, members) at the next start:",
        f"`{cluster.cmd} stop {inst['name']}; {cluster.cmd} start {inst['name']}`.",
        "The role is not configured: the members elect the primary through the lease file.",
    ]


def write_config(cluster, inst, bin_dir, path=None):
    """Writes pg-N/config.yaml (or `path`) unless it exists (it may have been edited by hand)."""
    path = path or cluster.config_path(inst)
    if not os.path.exists(path):
        write_config_file(path, config_doc(cluster, inst, bin_dir), config_comments(cluster, inst))


def validate_config(cluster, manager_bin, bin_dir):
    """Asks the manager binary (`instance-manager config check`) whether it accepts the
    configuration `up` is about to write, before anything is written or started: every member's
    file is written into a scratch directory with its own secrets (and TLS files), so the check
    reads the machine as `run` will. Fails with every problem, in the words of `up`'s options."""
    with tempfile.TemporaryDirectory(prefix="pgwarden-validate-") as tmp:
        scratch = Cluster(tmp, cmd=cluster.cmd)  # same state; secrets, lease file and dirs in tmp
        scratch.state = cluster.state
        scratch.given_secrets = cluster.given_secrets
        write_secrets(scratch)
        if cluster.state.get("tls"):
            pgwarden_tls.generate(tmp)
        os.chmod(tmp, 0o755)
        problems = []
        for inst in scratch.instances:
            os.makedirs(scratch.inst_dir(inst), mode=0o755)
            path = os.path.join(tmp, f"{inst['name']}.yaml")
            write_config(scratch, inst, bin_dir, path)
            problems += [p for p in config_problems(manager_bin, path) if p not in problems]
    if problems:
        raise Failure("the instance manager refuses this configuration (`instance-manager config check`):\n  "
                      + "\n  ".join(as_flags(p.replace(tmp, cluster.dir)) for p in problems),
                      "fix the options of `up` (lease timings, --synchronous, --cluster, --archive, --restore-from)")


# --- processes --------------------------------------------------------------------------------

def launch(cluster, inst, manager_bin, quiet=False):
    """Starts the instance's manager detached (its own session, like setsid), logging to
    pg-N/manager.log; returns the Popen so an early exit is noticed at once."""
    os.makedirs(cluster.run_dir(inst), mode=0o755, exist_ok=True)
    stray = stop_stray_postmaster(cluster.data_dir(inst))
    if stray and not quiet:
        info(f"{inst['name']}: stopped postmaster pid {stray}, left over from a manager that died")
    check_ports(cluster, inst, f"stop that process, or `{cluster.cmd} down --purge` and create the cluster "
                               f"on other ports: {other_ports_hint(len(cluster.instances))}")
    with open(cluster.log_path(inst), "ab") as log:
        proc = subprocess.Popen([manager_bin, "run", "--config", cluster.config_path(inst)],
                                cwd=cluster.inst_dir(inst), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    with open(cluster.pid_path(inst), "w") as f:
        f.write(f"{proc.pid}\n")
    if not quiet:
        info(f"{inst['name']}: started manager pid {proc.pid} (postgres :{inst['pg_port']}, api :{inst['api_port']})")
    return proc


def probe(inst, path, timeout=2):
    """(HTTP status or None, short text of what was seen) for GET path."""
    status, body = http_get(Cluster.api_url(inst) + path, timeout=timeout)
    seen = "no answer" if status is None else f"HTTP {status}"
    body = " ".join(body.split())[:200]
    return status, f"GET {path}: {seen}{': ' + body if body else ''}"


def cluster_health(cluster, insts=None):
    """(primaries, not ready {name: what was seen}) over `insts` (default: all): the instances
    answering /primary 200, and the others whose /readyz is not 200."""
    primaries, not_ready = [], {}
    for inst in insts or cluster.instances:
        if cluster.manager_pid(inst) is None:
            not_ready[inst["name"]] = "not running"
            continue
        status, _ = probe(inst, "/primary")
        if status == 200:
            primaries.append(inst["name"])
            continue
        status, seen = probe(inst, "/readyz")
        if status != 200:
            not_ready[inst["name"]] = seen
    return primaries, not_ready


def check_procs(cluster, procs):
    """Fails at once when a manager started by us has exited."""
    for name, proc in procs.items():
        code = proc.poll()
        if code is not None:
            inst = cluster.instance(name)
            raise Failure(f"{name}: the instance manager exited with code {code} before the cluster was ready"
                          + cluster.log_excerpt(inst),
                          f"read {cluster.log_path(inst)}; fix the cause, then `{cluster.cmd} start {name}`")


def wait_healthy(cluster, procs, timeout, quiet=False):
    """Waits (bounded) until exactly one instance answers /primary 200 and every other one
    /readyz 200 (a replica's manager requires it to stream for that). Returns the primary's name."""
    deadline = time.monotonic() + timeout
    reported = set()
    while True:
        check_procs(cluster, procs)
        primaries, not_ready = cluster_health(cluster)
        if not quiet:
            for name in primaries:
                if name not in reported:
                    info(f"{name}: primary (holds the lease, accepts writes)")
                    reported.add(name)
            for inst in cluster.instances:
                name = inst["name"]
                if name not in primaries and name not in not_ready and name not in reported:
                    info(f"{name}: ready (replica, streaming)")
                    reported.add(name)
        if len(primaries) == 1 and not not_ready:
            return primaries[0]
        if time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    for name, seen in not_ready.items():
        if seen == "not running" and name not in procs:
            inst = cluster.instance(name)
            raise Failure(f"{name} is not running (its manager exited)" + cluster.log_excerpt(inst),
                          f"read {cluster.log_path(inst)}; `{cluster.cmd} start {name}` starts it again")
    rec = cluster.read_lease_file()
    lease = (f"the lease file names {rec.get('holder') or 'no holder'} (term {rec.get('transitions')})"
             if rec else f"there is no lease file {cluster.lease_path} yet")
    if not primaries:
        blame = cluster.instance(rec["holder"]) if rec and rec.get("holder") else cluster.instances[0]
        why = f"no instance answers /primary with 200 after {timeout} s ({lease})"
    elif len(primaries) > 1:
        blame = cluster.instance(primaries[0])
        why = f"several instances answer /primary with 200: {', '.join(primaries)} ({lease}); please report this"
    else:
        name = next(iter(not_ready))
        blame = cluster.instance(name)
        why = f"{name} not ready after {timeout} s (last seen: {not_ready[name]}); primary: {primaries[0]}"
    others = ", ".join(f"{n} ({s})" for n, s in not_ready.items() if n != blame["name"])
    raise Failure(why + (f"; also not ready: {others}" if others else "") + cluster.log_excerpt(blame),
                  f"read {cluster.log_path(blame)} (and the other pg-*/manager.log); the cluster is left running "
                  f"(`{cluster.cmd} status`, `down` to stop it); a slow machine may need --timeout")


def wait_ready(cluster, inst, proc, timeout):
    """Waits (bounded) until one instance answers /readyz 200; returns its role."""
    deadline = time.monotonic() + timeout
    while True:
        check_procs(cluster, {inst["name"]: proc} if proc else {})
        status, seen = probe(inst, "/readyz")
        if status == 200:
            return "primary" if probe(inst, "/primary")[0] == 200 else "replica"
        if time.monotonic() >= deadline:
            raise Failure(f"{inst['name']} not ready after {timeout} s (last seen: {seen})" + cluster.log_excerpt(inst),
                          f"read {cluster.log_path(inst)}; `{cluster.cmd} status` shows the others "
                          "(a replica is ready only once it streams from a primary)")
        time.sleep(0.25)


def stop_instances(cluster, insts, timeout):
    """SIGTERM every manager of `insts`, then waits (bounded) for all of them."""
    signalled = []
    for inst in insts:
        pid = cluster.manager_pid(inst)
        if pid is None:
            info(f"{inst['name']}: not running")
        else:
            info(f"{inst['name']}: stopping manager pid {pid} (SIGTERM)")
            signal_pid(pid, signal.SIGTERM)
            signalled.append((inst, pid))
    stuck = []
    deadline = time.monotonic() + timeout
    for inst, pid in signalled:
        if wait_gone(pid, max(0.0, deadline - time.monotonic()), must_contain=[cluster.config_path(inst)]):
            info(f"{inst['name']}: stopped")
        else:
            stuck.append((inst, pid))
    if stuck:
        names = ", ".join(f"{i['name']} (manager pid {p})" for i, p in stuck)
        first = stuck[0][0]
        raise Failure(f"{names} did not exit within {timeout} s of SIGTERM" + cluster.log_excerpt(first),
                      f"read {cluster.log_path(first)}; wait and run the command again, or force it with "
                      f"`kill -KILL {stuck[0][1]}` (Postgres then needs crash recovery on the next start)")
    for inst in insts:
        stop_stray_postmaster(cluster.data_dir(inst))
        try:
            os.unlink(cluster.pid_path(inst))
        except FileNotFoundError:
            pass


def find_primary(cluster):
    """The instance whose /primary answers 200 (asked, never assumed)."""
    found = []
    for inst in cluster.instances:
        if cluster.manager_pid(inst) is None:
            continue
        status, _ = http_get(cluster.api_url(inst) + "/primary", timeout=2)
        if status == 200:
            found.append(inst)
    if not found:
        rec = None if cluster.legacy else cluster.read_lease_file()
        why = ""
        if rec is not None:
            why = f" (the lease names {rec.get('holder') or 'no holder'}, term {rec.get('transitions')}: a failover may be under way)"
        raise Failure("no instance answers 200 on /primary: the cluster has no primary right now" + why,
                      f"see `{cluster.cmd} status`; `{cluster.cmd} up` starts stopped instances")
    if len(found) > 1:
        raise Failure(f"several instances claim to be primary: {', '.join(i['name'] for i in found)}",
                      "pass --instance NAME to choose one, and report this: it must not happen")
    return found[0]


# --- status -----------------------------------------------------------------------------------

def collect(cluster):
    """One JSON object per instance: its /status document plus api_url, manager_pid,
    postgres_pid, ready and postgres_port; down instances get role "down" and nulls (their
    postgres_pid is that of a postmaster still running without its manager, if any)."""
    out = []
    for inst in cluster.instances:
        url = cluster.api_url(inst)
        pid = cluster.manager_pid(inst)
        doc = None
        error = None
        if pid is not None:
            status, doc, body = http_json(url + "/status", timeout=3)
            if status != 200 or not isinstance(doc, dict):
                error = f"GET /status: {'no answer: ' + body if status is None else f'HTTP {status}'}"
                doc = None
        if doc is None:
            entry = {"name": inst["name"], "role": "down" if pid is None else "unknown",
                     "configured_role": inst.get("role")}
            if error:
                entry["error"] = error
        else:
            entry = dict(doc)
        readyz, _ = http_get(url + "/readyz", timeout=2) if doc is not None else (None, "")
        pg_pid = ((doc or {}).get("postgres") or {}).get("pid")
        if pid is None:
            pg_pid = postmaster_pid(cluster.data_dir(inst))
        entry.update({
            "api_url": url,
            "manager_pid": pid,
            "postgres_pid": pg_pid,
            "ready": readyz == 200,
            "postgres_port": inst["pg_port"],
            "metrics_url": f"http://{HOST}:{metrics_port(inst)}/metrics",
        })
        entry["ca_file"] = pgwarden_tls.ca_file(cluster.dir) if cluster.state.get("tls") else None
        out.append(entry)
    return out


def lease_view(entries, record=None):
    """What the lease says: (holder, term) from the lease file's `record` when given (the
    truth: /status documents lag it by up to a retry period), else from the answering
    instances; expiry as seen by the holder itself, else by the instance that will see it
    expire first; the published synchronous set and the latest change of primary.
    None when there is neither a record nor a document with a lease object."""
    docs = [e for e in entries if isinstance(e.get("lease"), dict)]
    if not docs and record is None:
        return None
    if record is not None:
        holder, term = record.get("holder"), record.get("transitions") or 0
    else:
        term = max(d["lease"].get("term") or 0 for d in docs)
        holder = next((d["lease"].get("holder") for d in docs if (d["lease"].get("term") or 0) == term), None)
    current = [d for d in docs if (d["lease"].get("term") or 0) == term and d["lease"].get("holder") == holder]
    own = next((d for d in current if d["lease"].get("held_by_me")), None)
    seen = [own] if own else [d for d in current if d["lease"].get("expires_in_seconds") is not None]
    expires, seen_by = None, None
    if seen:
        best = min(seen, key=lambda d: d["lease"]["expires_in_seconds"]
                   if d["lease"].get("expires_in_seconds") is not None else float("inf"))
        expires, seen_by = best["lease"].get("expires_in_seconds"), best["name"]
    trans = [d["lease"]["last_transition"] for d in docs if d["lease"].get("last_transition")]
    last = max(trans, key=lambda t: (t.get("term") or 0, t.get("at") or "")) if trans else None
    if record is not None:
        sync = record.get("syncStandbys") or []
    else:
        sync = next((d["lease"].get("sync_standbys") for d in current if d["lease"].get("sync_standbys")), [])
    return {"holder": holder, "term": term, "expires_in": expires, "seen_by": seen_by,
            "sync_standbys": sync or [], "last_transition": last}
