"""SQL from the scripts through `psql`: one-off queries (`query`) and long-lived sessions with a
bounded wait per statement (`Session`, the write probes of `scripts/bench-failover`).

Why psql and no client of our own: it is Postgres' standard client, installed with the server
packages (Debian's postgresql-client-15 comes with postgresql-15), and speaks every
authentication method and TLS. A session is one `psql` process reading statements on stdin;
after each statement it echoes a marker on stdout and on stderr (`\\echo`, `\\warn`: psql 13 or
newer), so the script knows exactly when the server acknowledged it and which errors and
warnings belong to it. A connection that breaks makes a non-interactive psql exit (code 2): the
outcome of a statement in flight is then unknown, as with any client.

Python 3 standard library only. Rows come back as lists of strings, NULL as None.
"""

import os
import selectors
import shutil
import subprocess
import time

from pgwarden_local import Failure, find_pg_bindir

FIELD_SEP = "\x1f"   # unit separator: between the columns of a row
RECORD_SEP = "\x1e"  # record separator: between rows
NULL = "\x1d"        # group separator: what psql prints for NULL
MARK = "--pgwarden-psql-done--"


class PgError(Exception):
    """The server refused a statement (or the login); a session stays usable after a statement."""


class ConnectionLost(Exception):
    """The connection failed, timed out or broke: the outcome of a statement in flight is unknown."""


def psql_path():
    """`psql` beside the Postgres server binaries, else on PATH."""
    d = find_pg_bindir()
    if d and os.access(os.path.join(d, "psql"), os.X_OK):
        return os.path.join(d, "psql")
    found = shutil.which("psql")
    if found:
        return found
    raise Failure("psql is not installed (the scripts run SQL through it)",
                  "install it with the server: `apt-get install postgresql-15` (postgresql-client-15)")


def _env(host, port, user, password, database, connect_timeout, options):
    """psql's environment: ours without any PG* variable (a caller's PGSSLMODE or PGSERVICE
    must not redirect a benchmark), plus the connection's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=host, PGPORT=str(port), PGUSER=user, PGDATABASE=database, PGAPPNAME="pgwarden-scripts",
               PGCONNECT_TIMEOUT=str(max(2, int(connect_timeout + 0.999))))
    if password is not None:
        env["PGPASSWORD"] = password
    if options:
        env["PGOPTIONS"] = " ".join(f"-c {k}={v}" for k, v in options.items())
    return env


def _args(*extra):
    return [psql_path(), "-X", "-q", "-A", "-t", "-F", FIELD_SEP, "-R", RECORD_SEP, "-P", f"null={NULL}", *extra]


def parse_rows(out):
    """psql's unaligned output (FIELD_SEP, RECORD_SEP, NULL) as rows of strings and None."""
    out = out.rstrip("\n")
    if not out:
        return []
    return [[None if v == NULL else v for v in rec.split(FIELD_SEP)] for rec in out.split(RECORD_SEP)]


def _error(stderr):
    """psql's complaint without its `psql: ` / `psql:<stdin>:1: ` prefixes, on one line."""
    lines = [line.split("ERROR:", 1)[-1].strip() if "ERROR:" in line else line.strip()
             for line in stderr.splitlines() if line.strip()]
    return " ".join(lines)[:500] or "no message"


def query(host, port, user, password, database, sql, timeout=30, connect_timeout=3, options=None):
    """Runs `sql` (one statement, or several: the last one's rows are returned)."""
    try:
        res = subprocess.run(_args("-v", "ON_ERROR_STOP=1", "-c", sql), stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=timeout + connect_timeout,
                             env=_env(host, port, user, password, database, connect_timeout, options))
    except subprocess.TimeoutExpired:
        raise ConnectionLost(f"{host}:{port}: no answer within {timeout + connect_timeout:g} s") from None
    if res.returncode == 2:
        raise ConnectionLost(f"{host}:{port}: {_error(res.stderr)}")
    if res.returncode != 0:
        raise PgError(_error(res.stderr))
    return parse_rows(res.stdout)


class Session:
    """One psql process, one connection. Every call is bounded by its timeout; after a
    ConnectionLost the session is closed. `notices` collects the WARNING/NOTICE lines of the
    last statement (e.g. "canceling wait for synchronous replication")."""

    def __init__(self, host, port, user, password, database, connect_timeout=1.0, options=None):
        self.where = f"{host}:{port}"
        self.notices = []
        self.proc = subprocess.Popen(_args("-v", "ON_ERROR_STOP=0"), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=_env(host, port, user, password, database, connect_timeout, options))
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ, "out")
        self.sel.register(self.proc.stderr, selectors.EVENT_READ, "err")
        try:
            self.query("", timeout=connect_timeout + 2)  # only the markers: the login is done
        except PgError as e:
            self.close()
            raise ConnectionLost(f"connect {self.where}: {e}") from None

    def query(self, sql, timeout=2.0):
        """Runs `sql`; returns its rows. PgError: the server refused it (the session goes on);
        ConnectionLost: no answer in time or the connection broke (the session is closed)."""
        self.notices = []
        script = (sql.rstrip().rstrip(";") + ";\n" if sql.strip() else "") + f"\\echo {MARK}\n\\warn {MARK}\n"
        try:
            self.proc.stdin.write(script.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._lost("psql has exited") from None
        bufs = {"out": b"", "err": b""}
        done = set()
        deadline = time.monotonic() + timeout
        while len(done) < 2:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._lost(f"no answer within {timeout:g} s")
            for key, _ in self.sel.select(left):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    raise self._lost(bufs["err"].decode(errors="replace").strip() or "psql has exited")
                bufs[key.data] += chunk
                if (MARK + "\n").encode() in bufs[key.data]:
                    done.add(key.data)
        out = bufs["out"].decode(errors="replace").split(MARK + "\n")[0]
        err = bufs["err"].decode(errors="replace").split(MARK + "\n")[0]
        errors = [line for line in err.splitlines() if "ERROR:" in line or "FATAL:" in line]
        self.notices = [line for line in err.splitlines() if line not in errors and line.strip()]
        if errors:
            raise PgError(_error("\n".join(errors)))
        return parse_rows(out.rstrip(RECORD_SEP + "\n"))

    def _lost(self, why):
        self.close()
        return ConnectionLost(f"{self.where}: {why}")

    def close(self):
        try:
            self.proc.stdin.close()  # psql ends the session at the end of its input
        except OSError:
            pass
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sel.close()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()
