"""What `scripts/bench-archive` runs against: the S3-compatible test server (TLS, private CA), a
plain Postgres cluster for the anchors, pgwarden instances, and the two anchor tools (pgBackRest
and barman-cloud) set up to reach the same server. Every process started here is registered
with `Cleanups` and stopped on exit; every wait is bounded.

Python 3 standard library only; failures raise `Failure(message, hint)`.
"""

import http.client
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time

from pgwarden_local import (
    REPO_ROOT, Failure, check_config, free_port, http_get, info, is_root, lone_primary, signal_pid,
    stop_stray_postmaster, tail, wait_gone, write_config_file, write_private,
)
from pgsql import ConnectionLost, PgError, query

TEST_S3_BIN = os.path.join(REPO_ROOT, "target", "release", "pgwarden-test-s3")
BARMAN_VENV = "/opt/pgwarden-bench/barman-cloud"
STANZA = "bench"          # pgBackRest stanza and barman server name
SUPERUSER = "postgres"
# The same Postgres settings for pgwarden and the plain cluster: pgwarden's defaults
# (pgconf::DEFAULTS, wal_log_hints, archive_timeout) plus room for the whole backlog in pg_wal.
COMMON_PARAMS = {
    "shared_buffers": "128MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min",
    "wal_level": "replica", "max_wal_senders": "10", "wal_keep_size": "512MB",
    "wal_log_hints": "on", "archive_timeout": "5min",
}
PGWARDEN_PARAMS = {"max_wal_size": "4GB", "checkpoint_timeout": "30min"}  # the rest are its defaults


# --- cleanup ----------------------------------------------------------------------------------

class Cleanups:
    """Undo actions run last-in first-out; `mark()`/`run(mark)` scope a part of the run."""

    def __init__(self):
        self.items = []

    def add(self, fn, *args):
        self.items.append((fn, args))

    def mark(self):
        return len(self.items)

    def run(self, until=0):
        while len(self.items) > until:
            fn, args = self.items.pop()
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - keep cleaning up the rest
                info(f"cleanup: {getattr(fn, '__name__', fn)}: {e}")


CLEANUPS = Cleanups()


def kill_leftovers(marker):
    """SIGTERM, then SIGKILL, every process whose command line holds `marker` (this run's
    temporary directory): pgBackRest's detached async archiver and anything else started,
    indirectly, for this run. Matched by pid, never by name."""
    def find():
        out = []
        for p in filter(str.isdigit, os.listdir("/proc")):
            if int(p) == os.getpid():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        out.append(int(p))
            except OSError:
                continue
        return out
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 2)):
        pids = find()
        if not pids:
            return
        for p in pids:
            signal_pid(p, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and find():
            time.sleep(0.1)


# --- running things as the Postgres OS user ---------------------------------------------------

class PgUser:
    """Runs commands as the unprivileged Postgres OS user when we are root (Postgres, pgBackRest
    and barman-cloud as archive_command all run as that user)."""

    def __init__(self, pw, home):
        self.pw = pw
        self.home = home

    def chown(self, path):
        if self.pw:
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def mkdir(self, path, mode=0o700):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
        self.chown(path)
        return path

    def kwargs(self, env=None):
        e = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "LANG": "C.UTF-8"}
        e.update(env or {})
        kw = {"env": e, "stdin": subprocess.DEVNULL}
        if self.pw and is_root():
            kw.update(user=self.pw.pw_uid, group=self.pw.pw_gid, extra_groups=[])
        return kw

    def run(self, cmd, timeout, env=None, what=None):
        """Runs `cmd` to completion; raises Failure with its output when it fails."""
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **self.kwargs(env))
        except subprocess.TimeoutExpired:
            raise Failure(f"{what or cmd[0]}: no answer within {timeout} s") from None
        if res.returncode != 0:
            out = (res.stdout + res.stderr).strip()
            raise Failure(f"{what or os.path.basename(cmd[0])} failed with exit code {res.returncode}: {out[-800:]}")
        return res.stdout

    def popen(self, cmd, log, env=None):
        with open(log, "ab") as f:
            return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    **self.kwargs(env))


# --- the S3-compatible server -----------------------------------------------------------------

class S3Server:
    """`pgwarden-test-s3 --tls` over a directory: the one server every tool talks to."""

    def __init__(self, binary, root, timeout=30):
        self.dir = os.path.join(root, "s3")
        os.makedirs(self.dir)
        self.log = os.path.join(root, "s3.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([binary, "--dir", self.dir, "--listen", "127.0.0.1:0", "--tls"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                         start_new_session=True)
        CLEANUPS.add(self.stop)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise Failure(f"pgwarden-test-s3 printed nothing within {timeout} s", "\n".join(tail(self.log, 10)))
        line = self.proc.stdout.readline().decode()
        try:
            doc = json.loads(line)
        except ValueError:
            raise Failure(f"pgwarden-test-s3 did not print its JSON line (got {line[:200]!r})",
                          "\n".join(tail(self.log, 10))) from None
        self.endpoint, self.bucket, self.region = doc["endpoint"], doc["bucket"], doc["region"]
        self.access_key, self.secret_key, self.ca_file = doc["accessKey"], doc["secretKey"], doc.get("caFile")
        if not self.ca_file:
            raise Failure("pgwarden-test-s3 --tls did not report a caFile")
        os.chmod(self.ca_file, 0o644)
        self.port = int(self.endpoint.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def prefix_bytes(self, prefix):
        """Bytes stored under `prefix` (s3s-fs keeps one file per object under DIR/BUCKET/KEY)."""
        return dir_bytes(os.path.join(self.dir, self.bucket, prefix))


def dir_bytes(path, skip=()):
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def data_bytes(data_dir):
    """Size of a data directory without its WAL: what a base backup has to copy."""
    return dir_bytes(data_dir, skip={os.path.join(data_dir, "pg_wal")})


# --- SQL --------------------------------------------------------------------------------------

def sql(port, text, password=None, timeout=30, db="postgres"):
    """Runs `text` on 127.0.0.1:port as the superuser; returns the rows."""
    return query("127.0.0.1", port, SUPERUSER, password, db, text, timeout=timeout, connect_timeout=3)


def wait_sql(port, text, password, timeout, ok, what):
    """Polls `text` until `ok(rows)`; returns the rows. Connection failures are retried."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            rows = sql(port, text, password, timeout=10)
            if ok(rows):
                return rows
            last = repr(rows)[:200]
        except (ConnectionLost, PgError, OSError) as e:
            last = str(e)[:200]
        time.sleep(0.05)
    raise Failure(f"{what}: not reached within {timeout} s (last: {last})")


def ready_files(data_dir):
    """WAL files Postgres has marked ready to archive."""
    try:
        return {n[:-6] for n in os.listdir(os.path.join(data_dir, "pg_wal", "archive_status")) if n.endswith(".ready")}
    except FileNotFoundError:
        return set()


def pg_params(params):
    out = []
    for k, v in params.items():
        out += ["-c", f"{k}={v}"]
    return out


# --- a plain Postgres cluster (the anchors' side) ---------------------------------------------

class PlainPostgres:
    """initdb + postgres run as the Postgres OS user, trust on loopback. archive_command lives
    in postgresql.auto.conf (ALTER SYSTEM) so the anchors can be switched with a reload."""

    def __init__(self, user, bin_dir, root, name, timeout):
        self.user, self.bin_dir, self.timeout = user, bin_dir, timeout
        self.dir = user.mkdir(os.path.join(root, name), 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sock_dir = self.dir
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        self.password = None
        self.proc = None

    def initdb(self):
        self.user.run([os.path.join(self.bin_dir, "initdb"), "-D", self.data, "-U", SUPERUSER, "--data-checksums",
                       "--encoding=UTF8", "--no-locale", "--auth=trust"], timeout=120, what="initdb")

    def start(self, extra=None):
        params = dict(COMMON_PARAMS, archive_mode="on", port=str(self.port), listen_addresses="127.0.0.1",
                      unix_socket_directories=self.sock_dir)
        params.update(extra or {})
        self.proc = self.user.popen([os.path.join(self.bin_dir, "postgres"), "-D", self.data] + pg_params(params),
                                    self.log)
        CLEANUPS.add(self.stop)

    def wait_up(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"postgres ({self.data}) exited with code {self.proc.returncode}",
                              "\n".join(tail(self.log, 12)))
            try:
                return sql(self.port, "SELECT 1", timeout=5)
            except (ConnectionLost, PgError, OSError) as e:
                last = str(e)[:200]
            time.sleep(0.05)
        raise Failure(f"postgres ({self.data}) not answering within {timeout or self.timeout} s: {last}",
                      "\n".join(tail(self.log, 12)))

    def sql(self, text, timeout=60):
        return sql(self.port, text, timeout=timeout)

    def set_archive_command(self, command):
        """'' stops archiving (Postgres keeps the .ready files and does not call anything)."""
        q = command.replace("'", "''")
        self.sql(f"ALTER SYSTEM SET archive_command = '{q}'")
        self.sql("SELECT pg_reload_conf()")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGQUIT)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        stop_stray_postmaster(self.data, timeout=15)


# --- pgwarden ---------------------------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def unix_request(sock_path, method, path, body=None, timeout=30):
    """(status, parsed JSON or text) of one request on a manager's Unix socket."""
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"content-type": "application/json"} if data else {})
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text
    finally:
        conn.close()


class Pgwarden:
    """One `instance-manager run` in its own directory: a primary archiving to the S3 server,
    or (with `recovery_target`) a recovery bootstrap from that store."""

    def __init__(self, manager_bin, bin_dir, root, name, s3, prefix, secrets, timeout, recovery=None):
        self.manager_bin, self.timeout = manager_bin, timeout
        self.dir = os.path.join(root, name)
        os.makedirs(os.path.join(self.dir, "run"))
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "pgdata")
        self.run_dir = os.path.join(self.dir, "run")
        self.log = os.path.join(self.dir, "manager.log")
        self.port, self.api_port = free_port(), free_port()
        while self.api_port == self.port:
            self.api_port = free_port()
        self.password = secrets.superuser
        store = {"destination": f"s3://{s3.bucket}/{prefix}",
                 "s3": {"endpoint": s3.endpoint, "accessKeyIdFile": secrets.s3_key,
                        "secretAccessKeyFile": secrets.s3_secret, "caFile": s3.ca_file}}
        credentials = {"superuserPasswordFile": secrets.superuser_file, "appPasswordFile": secrets.app_file,
                       "replicationPasswordFile": secrets.replication_file}
        doc = lone_primary(name, self.dir, bin_dir, self.port, self.api_port, credentials)
        doc["postgres"]["parameters"] = dict(PGWARDEN_PARAMS)
        doc["shutdown"]["stopTimeoutSeconds"] = 30
        if recovery is None:
            doc["bootstrap"] = {"database": "app", "owner": "app"}
            doc["backup"] = {"store": store, "wal": {"compression": "zstd", "maxParallel": 4},
                             "base": {"compression": "zstd", "maxParallel": 4}}
        else:
            doc["bootstrap"] = {"recovery": {"store": store, "sourceCluster": "bench", "target": {"time": recovery}}}
        self.config = os.path.join(self.dir, "config.yaml")
        write_config_file(self.config, doc)
        check_config(manager_bin, self.config)
        self.proc = None

    def spawn(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.manager_bin, "run", "--config", self.config], cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=dict(os.environ, RUST_LOG="info"))
        CLEANUPS.add(self.stop)

    def wait_ready(self, timeout=None):
        """Waits for GET /readyz 200 (a recovery bootstrap answers it once promoted)."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"instance-manager ({self.dir}) exited with code {self.proc.returncode}"
                              + self.excerpt())
            status, body = http_get(f"http://127.0.0.1:{self.api_port}/readyz", timeout=1)
            if status == 200:
                return
            last = "no answer" if status is None else f"HTTP {status} {' '.join(body.split())[:150]}"
            time.sleep(0.02)
        raise Failure(f"instance-manager ({self.dir}): /readyz not 200 within {timeout} s (last: {last})"
                      + self.excerpt())

    def excerpt(self):
        return "\n  log:\n" + "\n".join("    " + line[:300] for line in tail(self.log, 12))

    def status(self):
        _, body = http_get(f"http://127.0.0.1:{self.api_port}/status", timeout=5)
        try:
            return json.loads(body)
        except (TypeError, ValueError):
            return {}

    def sql(self, text, timeout=60):
        return sql(self.port, text, self.password, timeout=timeout)

    @property
    def wal_socket(self):
        return os.path.join(self.run_dir, "wal.sock")

    def gate_archive(self, closed):
        """Closes (renames) or reopens the WAL socket Postgres' archive_command talks to: while
        closed, `instance-manager wal-archive` fails at once and the .ready files pile up, with
        nothing reaching the manager."""
        a, b = (self.wal_socket, self.wal_socket + ".closed") if closed else (self.wal_socket + ".closed", self.wal_socket)
        os.rename(a, b)

    def backup(self, timeout):
        status, doc = unix_request(os.path.join(self.run_dir, "manager.sock"), "POST", "/backup", {"wait": True},
                                   timeout=timeout)
        if status != 200 or not isinstance(doc, dict):
            raise Failure(f"pgwarden POST /backup answered {status}: {str(doc)[:400]}")
        return doc

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            signal_pid(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                info(f"manager pid {self.proc.pid} ignored SIGTERM for 60 s; killing its process group")
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        if os.path.isdir(self.data):
            stop_stray_postmaster(self.data, timeout=15)


class Secrets:
    """Password files of the pgwarden instances and the S3 keys (0600, root's)."""

    def __init__(self, root, s3):
        d = os.path.join(root, "secrets")
        os.makedirs(d, mode=0o700)
        self.superuser = os.urandom(12).hex()
        self.superuser_file = os.path.join(d, "superuser")
        self.app_file = os.path.join(d, "app")
        self.replication_file = os.path.join(d, "replication")
        write_private(self.superuser_file, self.superuser + "\n")
        write_private(self.app_file, os.urandom(12).hex() + "\n")
        write_private(self.replication_file, os.urandom(12).hex() + "\n")
        self.s3_key = os.path.join(d, "s3-key")
        self.s3_secret = os.path.join(d, "s3-secret")
        write_private(self.s3_key, s3.access_key + "\n")
        write_private(self.s3_secret, s3.secret_key + "\n")


# --- manager memory ---------------------------------------------------------------------------

class RssSampler:
    """Max VmRSS of one process sampled every `period` s, and the kernel's own peak (VmHWM,
    reset at start through /proc/PID/clear_refs)."""

    def __init__(self, pid, period=0.1):
        self.pid, self.period = pid, period
        self.max_kb = 0
        self.stop_ev = threading.Event()
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read(self, key):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self):
        while not self.stop_ev.is_set():
            self.max_kb = max(self.max_kb, self._read("VmRSS:"))
            self.stop_ev.wait(self.period)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(timeout=2)
        self.max_kb = max(self.max_kb, self._read("VmRSS:"))
        return {"max_rss_mb": self.max_kb / 1024,
                "hwm_mb": (self._read("VmHWM:") / 1024) if self.hwm_reset else None}


def wait_until(pred, timeout, what, period=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(period)
    raise Failure(f"{what}: not within {timeout} s")


def kill_proc(proc):
    """Stops a child started here (and its process group) without waiting long."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if not wait_gone(proc.pid, 10, child=proc):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


# --- who else uses the machine ----------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_ticks(pid):
    """utime+stime+cutime+cstime of a process (reaped children included), and its parent."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15])


class OthersCpu:
    """The share of all CPUs used by processes that are not this benchmark's during a
    measurement: /proc/stat's busy time minus the CPU time of our processes (our descendants,
    and whatever holds `marker` in its command line, like pgBackRest's detached async archiver).
    An estimate: a process started and ended inside the window counts when its parent is ours."""

    def __init__(self, marker):
        self.marker = marker.encode()
        self.t0 = self._snapshot()

    def _snapshot(self):
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        total, busy = sum(v[:8]), sum(v[:8]) - v[3] - v[4]
        parents, ticks = {}, {}
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                parents[int(p)], ticks[int(p)] = _stat_ticks(p)
            except (OSError, IndexError, ValueError):
                continue
        ours, todo = set(), [os.getpid()]
        children = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        for pid in ticks:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if self.marker in f.read():
                        todo.append(pid)
            except OSError:
                continue
        while todo:
            pid = todo.pop()
            if pid not in ours:
                ours.add(pid)
                todo.extend(children.get(pid, []))
        return total, busy, {p: ticks[p] for p in ours}

    def stop(self):
        """(share of all CPUs others used, CPU seconds our processes used)."""
        total0, busy0, ours0 = self.t0
        total1, busy1, ours1 = self._snapshot()
        ours = sum(t - ours0.get(p, 0) for p, t in ours1.items())
        span = max(1, total1 - total0)
        return max(0.0, (busy1 - busy0 - ours) / span), ours / CLK_TCK


def cpu_seconds(pid):
    """utime+stime (with reaped children) of one process, in seconds; 0 when it is gone."""
    try:
        return _stat_ticks(pid)[1] / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0
