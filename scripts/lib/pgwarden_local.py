"""What `scripts/local-cluster` and the benchmarks share: finding and building the instance
manager, writing an InstanceConfig as data and having the binary check it (`instance-manager
config check`: the scripts never validate a configuration themselves), the Postgres OS user,
process and port checks, and small HTTP probes.

Python 3 standard library only, so a fresh machine needs nothing besides python3.
Every function that can fail raises `Failure(message, hint)`; the scripts print it and exit 1.
"""

import errno
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PG_OS_USER = "postgres"


class Failure(Exception):
    """An error for a human: what failed, and what to do about it."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def report_failure(prog, failure):
    """Prints a Failure on stderr the same way in every script."""
    print(f"{prog}: error: {failure.message}", file=sys.stderr)
    if failure.hint:
        for line in failure.hint.splitlines():
            print(f"  hint: {line}", file=sys.stderr)


def info(msg):
    print(msg, file=sys.stderr, flush=True)


# --- the instance manager binary -------------------------------------------------------------

def manager_path(profile="release"):
    """Where `cargo build --profile PROFILE -p instance-manager` puts the binary."""
    return os.path.join(REPO_ROOT, "target", profile, "instance-manager")


def build_command(profile="release"):
    return ["cargo", "build", "--release" if profile == "release" else f"--profile={profile}", "-p",
            "instance-manager"]


def build_manager(quiet=False, profile="release"):
    """Runs `cargo build --profile PROFILE -p instance-manager` (incremental, so cheap when up to
    date). The benchmarks use `release` (the pod's size-optimised build); the local cluster
    `local` (release optimisation without fat LTO: a first build several times shorter)."""
    if shutil.which("cargo") is None:
        raise Failure("cargo is not on PATH, so the instance manager cannot be built",
                      "install Rust (https://rustup.rs), or pass --bin PATH to use a built binary")
    cmd = build_command(profile)
    binary = manager_path(profile)
    if not quiet:
        info("+ " + " ".join(cmd))
        if not os.access(binary, os.X_OK):
            cost = ("about 10 CPU-minutes: 5-10 minutes on 2 free cores" if profile == "local"
                    else "longer than the local profile (fat LTO, one codegen unit)")
            info(f"first build of the instance manager ({profile} profile, about 430 crates): {cost}, "
                 "less on more cores; later builds only recompile what changed")
    # cargo writes its progress on stderr, which is ours (its progress bar on a terminal, a
    # "Compiling" line per crate otherwise): a first, long build is not a mystery.
    res = subprocess.run(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                         stdout=sys.stderr if not quiet else subprocess.DEVNULL,
                         stderr=sys.stderr if not quiet else subprocess.PIPE)
    if res.returncode != 0:
        tail = ""
        if quiet and res.stderr:
            tail = "\n" + "\n".join(res.stderr.decode(errors="replace").splitlines()[-15:])
        raise Failure(f"`{' '.join(cmd)}` failed with exit code {res.returncode}{tail}",
                      f"run it in {REPO_ROOT} to see the full output")
    if not os.access(binary, os.X_OK):
        raise Failure(f"the build succeeded but {binary} is missing")
    return binary


def resolve_manager(bin_path=None, build=True, quiet=False, profile="release"):
    """The instance-manager binary to run: --bin, else a (re)built target/PROFILE one."""
    if bin_path:
        path = os.path.abspath(bin_path)
        if not os.access(path, os.X_OK):
            raise Failure(f"--bin {bin_path}: not an executable file")
        return path
    if build:
        return build_manager(quiet=quiet, profile=profile)
    if os.access(manager_path(profile), os.X_OK):
        return manager_path(profile)
    return build_manager(quiet=quiet, profile=profile)


# --- Postgres binaries and its OS user -------------------------------------------------------

def find_pg_bindir():
    """The directory of the Postgres server binaries: `postgres` on PATH (symlinks resolved),
    else the newest /usr/lib/postgresql/<version>/bin. None when there is none."""
    on_path = shutil.which("postgres")
    if on_path:
        return os.path.dirname(os.path.realpath(on_path))
    candidates = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        if os.access(os.path.join(d, "postgres"), os.X_OK):
            try:
                candidates.append((float(os.path.basename(os.path.dirname(d))), d))
            except ValueError:
                candidates.append((0.0, d))
    return max(candidates)[1] if candidates else None


def require_pg_bindir():
    d = find_pg_bindir()
    missing = [b for b in ("postgres", "initdb", "pg_basebackup", "pg_controldata", "pg_ctl")
               if d is None or not os.access(os.path.join(d, b), os.X_OK)]
    if d is None or missing:
        where = d or "PATH and /usr/lib/postgresql/*/bin"
        raise Failure(f"PostgreSQL server binaries not found ({', '.join(missing)} missing in {where})",
                      "install them, e.g. `apt-get install postgresql-15` (Debian/Ubuntu), "
                      "or put the directory holding `postgres` on PATH")
    return d


def is_root():
    return os.geteuid() == 0


def ensure_postgres_user():
    """When running as root, makes sure the `postgres` OS user exists (Postgres refuses root).
    Returns its pwd entry, or None when not root (Postgres then runs as the current user)."""
    if not is_root():
        return None
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        raise Failure(f"OS user {PG_OS_USER!r} does not exist and useradd is not available",
                      f"create a non-root user named {PG_OS_USER!r}")
    info(f"creating the OS user {PG_OS_USER!r} (Postgres refuses to run as root)")
    res = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                          "--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh", PG_OS_USER],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise Failure(f"useradd {PG_OS_USER} failed: {res.stderr.strip()}",
                      f"create a non-root user named {PG_OS_USER!r} by hand")
    return pwd.getpwnam(PG_OS_USER)


def check_traversable(path, user):
    """Postgres runs as `user` and must be able to reach `path`: every ancestor needs x for it."""
    if user is None:
        return
    cur = os.path.abspath(path)
    blocked = []
    while True:
        try:
            st = os.stat(cur)
        except FileNotFoundError:
            st = None
        if st is not None:
            mode = st.st_mode
            ok = (mode & stat.S_IXOTH) or (st.st_uid == user.pw_uid and mode & stat.S_IXUSR) \
                or (st.st_gid == user.pw_gid and mode & stat.S_IXGRP)
            if not ok:
                blocked.append(f"{cur} (mode {stat.S_IMODE(mode):04o})")
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    if blocked:
        raise Failure(f"the {user.pw_name!r} OS user cannot traverse {', '.join(blocked)} "
                      f"to reach {path}",
                      "`chmod o+x` those directories, or use a directory under /tmp (--dir)")


# --- processes --------------------------------------------------------------------------------

def proc_state(pid):
    """The one-letter state of a process from /proc/PID/stat, None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may hold spaces and parentheses; the state follows the last ')'.
    return data[data.rfind(")") + 2:].split()[0]


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def pid_alive(pid, must_contain=None):
    """True when `pid` runs (zombies count as dead) and, when given, every string of
    `must_contain` appears in its command line (guards against a recycled pid)."""
    if not pid:
        return False
    state = proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    if must_contain:
        cmd = " ".join(proc_cmdline(pid))
        return all(s in cmd for s in must_contain)
    return True


def read_pidfile(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def remove_tree(path, attempts=10):
    """Deletes the directory PATH and everything under it. Entries may vanish underneath (a
    postmaster that is still exiting removes its postmaster.pid): that is not an error. A
    directory that gains entries while it is emptied is retried a few times."""
    def vanished_is_fine(_func, _path, exc):
        if not isinstance(exc, FileNotFoundError):
            raise exc

    for attempt in range(attempts):
        try:
            if sys.version_info >= (3, 12):
                shutil.rmtree(path, onexc=vanished_is_fine)
            else:
                shutil.rmtree(path, onerror=lambda f, p, info: vanished_is_fine(f, p, info[1]))
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.ENOTEMPTY or attempt + 1 == attempts:
                raise Failure(f"cannot delete {path}: {e}",
                              "a process may still be writing there (`fuser -vm` shows which); stop it and "
                              "run the command again") from None
            time.sleep(0.2)


def postmaster_pid(data_dir):
    """The postmaster's pid from DATA_DIR/postmaster.pid when that process still runs."""
    pid = read_pidfile(os.path.join(data_dir, "postmaster.pid"))
    if pid and pid_alive(pid) and ("postgres" in " ".join(proc_cmdline(pid)) or
                                   "postmaster" in " ".join(proc_cmdline(pid))):
        return pid
    return None


def wait_gone(pid, timeout, must_contain=None, child=None):
    """Waits until `pid` has exited; True if it did within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return True
        if not pid_alive(pid, must_contain):
            return True
        time.sleep(0.1)
    return False


def signal_pid(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def stop_stray_postmaster(data_dir, timeout=30):
    """Stops a postmaster left running without its manager (the manager was SIGKILLed):
    fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL. Returns its pid or None."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return None
    info(f"stopping a postmaster (pid {pid}) left running without its manager in {data_dir}")
    for sig, wait in ((signal.SIGINT, timeout * 2 / 3), (signal.SIGQUIT, timeout / 3), (signal.SIGKILL, 5)):
        signal_pid(pid, sig)
        if wait_gone(pid, wait):
            return pid
    raise Failure(f"postmaster pid {pid} of {data_dir} did not exit even after SIGKILL")


# --- ports ------------------------------------------------------------------------------------

def port_free(port, host="127.0.0.1"):
    """Whether a listener could bind host:port now (SO_REUSEADDR, so TIME_WAIT does not count)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        s.close()


def free_port():
    """A port the kernel considers free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def who_listens(port):
    """'pid 123 (postgres -D ...)' for the process listening on TCP `port`, when /proc tells."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state, inode = parts[1], parts[3], parts[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except (FileNotFoundError, StopIteration):
            continue
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    cmd = " ".join(proc_cmdline(pid))[:100]
                    return f"pid {pid} ({cmd})"
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return "a process this user cannot see"


# --- HTTP -------------------------------------------------------------------------------------

def http_get(url, timeout=2.0):
    """GET url: (status, body text), or (None, error text) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        try:
            body = e.read().decode(errors="replace")
        except Exception:  # noqa: BLE001 - the status is what matters
            body = ""
        return e.code, body
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return None, str(reason)


def http_json(url, timeout=2.0):
    """GET url and parse JSON: (status, document or None, raw text)."""
    status, body = http_get(url, timeout)
    doc = None
    if status is not None:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
    return status, doc, body


# --- files ------------------------------------------------------------------------------------

def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - 256 * 1024)
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
        return lines[1 if start else 0:][-n:]  # a read from the middle starts with a partial line
    except FileNotFoundError:
        return []


def write_private(path, text):
    """Writes a file readable by its owner only (0600), created that way (no window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


# --- InstanceConfig files: written as data, checked by the binary ------------------------------
#
# A configuration is a dict shaped like the InstanceConfig (camelCase keys), written as JSON,
# which is YAML too, behind `#` comment lines. The binary is the only judge of it: `config
# check` loads it exactly as `run` will and names every bad field with its fix, so the scripts
# neither render YAML by hand nor re-implement a single rule of the validation.

def write_config_file(path, doc, comments=(), private=False):
    """Writes the InstanceConfig `doc` to `path`: each of `comments` as a `# ` line, then the
    document as JSON (valid YAML). `private`: mode 0600 from creation."""
    text = "".join(f"# {c}\n" if c else "#\n" for c in comments) + json.dumps(doc, indent=2) + "\n"
    if private:
        write_private(path, text)
    else:
        with open(path, "w") as f:
            f.write(text)


def write_password_files(directory):
    """Random passwords for superuser, app and replication in DIRECTORY (0700, files 0600);
    returns the InstanceConfig's `credentials` section naming them."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    out = {}
    for which, field in (("superuser", "superuserPasswordFile"), ("app", "appPasswordFile"),
                         ("replication", "replicationPasswordFile")):
        out[field] = os.path.join(directory, which)
        write_private(out[field], os.urandom(12).hex() + "\n")
    return out


def lone_primary(name, directory, bin_dir, pg_port, api_port, credentials):
    """The InstanceConfig of a benchmark's single instance in DIRECTORY (pgdata/, run/): primary
    by configuration, no lease, on 127.0.0.1, quick shutdown. Callers add their sections."""
    return {
        "name": name,
        "cluster": "bench",
        "dataDir": os.path.join(directory, "pgdata"),
        "runDir": os.path.join(directory, "run"),
        "binDir": bin_dir,
        "role": "primary",
        "postgres": {"port": pg_port, "listenAddresses": "127.0.0.1"},
        "api": {"listen": f"127.0.0.1:{api_port}"},
        "credentials": credentials,
        "shutdown": {"smartTimeoutSeconds": 2, "stopTimeoutSeconds": 10},
    }


def config_problems(manager_bin, path, timeout=30):
    """`instance-manager config check PATH`: [] when the manager would accept the file, else its
    complaints, one per problem (`postgres.port: 70000 is not a valid port (fix: ...)`).
    Raises Failure when the binary cannot check (too old for `config check`, or it hung)."""
    cmd = [manager_bin, "config", "check", path]
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failure(f"`{' '.join(cmd)}` did not finish within {timeout} s") from None
    if res.returncode == 0:
        return []
    out = res.stderr.strip()
    if "unrecognized subcommand" in out:
        raise Failure(f"{manager_bin} has no `config check` command: it predates this script",
                      "build the current instance manager (`cargo build --profile local -p instance-manager`), "
                      "or pass --bin with a current one")
    if res.returncode == 2 and out.startswith("error: "):
        # One problem per indented line ("  field: message (fix: ...)"), or one parse error.
        lines = out[len("error: "):].splitlines()
        problems = [line.strip() for line in lines[1:] if line.startswith("  ") and line.strip()]
        if problems and lines[0].endswith("is invalid:"):
            return problems
        return [" ".join(line.strip() for line in lines)]
    raise Failure(f"`{' '.join(cmd)}` failed with exit code {res.returncode}:\n  " + "\n  ".join(out.splitlines()[-10:]))


def check_config(manager_bin, path, what="the instance manager refuses this configuration",
                 hint=None):
    """Fails with every problem `config check` finds in PATH (see `config_problems`)."""
    problems = config_problems(manager_bin, path)
    if problems:
        raise Failure(f"{what} ({path}):\n  " + "\n  ".join(problems), hint)


def lsn_to_int(lsn):
    """'0/3000060' -> 50331744; None for None or garbage."""
    try:
        hi, lo = lsn.split("/")
        return (int(hi, 16) << 32) | int(lo, 16)
    except (AttributeError, ValueError):
        return None


def human_bytes(n):
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def descendants(*pids):
    """Every live descendant of `pids` (children, grandchildren, ...), from /proc."""
    children = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(p))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    out, todo = [], [p for p in pids if p]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out
