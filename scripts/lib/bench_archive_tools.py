"""The anchors of `scripts/bench-archive`: pgBackRest (Debian's package) and barman-cloud (PyPI),
installed when missing and configured against the same S3 test server as pgwarden (TLS with
the server's private CA, path-style addressing). Both run as the Postgres OS user, since Postgres
runs them as its archive_command and restore_command.

A tool that cannot be made to work gets `.error` (the reason) instead of raising: the report
then says why its rows are missing.
"""

import os
import shutil
import subprocess

from bench_archive_env import STANZA, Failure, info, remove_tree
from pgwarden_local import write_private

PGBACKREST_PROCESS_MAX = 4


def apt_install(package):
    """`apt-get install -y PACKAGE` (after `apt-get update` when the first try fails)."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    info(f"{package} is missing: running `apt-get install -y {package}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(2):
        res = subprocess.run(["apt-get", "install", "-y", package], capture_output=True, text=True, env=env,
                             stdin=subprocess.DEVNULL, timeout=900)
        if res.returncode == 0:
            return None
        if attempt == 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
    return f"apt-get install -y {package} failed: {res.stderr.strip()[-300:]}"


def first_line(cmd, **kw):
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kw)
        return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --- pgBackRest -------------------------------------------------------------------------------

class PgBackRest:
    """pgBackRest with an S3 repository on the test server: async archive-push (process-max 4),
    full backups, and time-target restores. Its defaults otherwise (gz compression)."""

    def __init__(self, user, root, s3, cluster):
        self.user, self.s3, self.cluster = user, s3, cluster
        self.error = None
        self.version = None
        if shutil.which("pgbackrest") is None:
            self.error = apt_install("pgbackrest")
            if self.error is None and shutil.which("pgbackrest") is None:
                self.error = "pgbackrest is still not on PATH after apt-get install"
            if self.error:
                return
        self.bin = shutil.which("pgbackrest")
        self.version = first_line([self.bin, "version"])
        d = user.mkdir(os.path.join(root, "pgbackrest"), 0o755)
        self.dirs = {k: user.mkdir(os.path.join(d, k)) for k in ("log", "lock", "spool")}
        self.prefix = "pgbackrest"
        self.conf = os.path.join(d, "pgbackrest.conf")
        # repo1-s3-endpoint is `localhost`, not 127.0.0.1: pgBackRest 2.45 matches the server
        # certificate's DNS names only, and the test CA's certificate holds localhost too.
        lines = [
            "[global]", "repo1-type=s3", f"repo1-path=/{self.prefix}", f"repo1-s3-bucket={s3.bucket}",
            "repo1-s3-endpoint=localhost", f"repo1-storage-port={s3.port}", f"repo1-s3-region={s3.region}",
            f"repo1-s3-key={s3.access_key}", f"repo1-s3-key-secret={s3.secret_key}", "repo1-s3-uri-style=path",
            f"repo1-storage-ca-file={s3.ca_file}", "repo1-storage-verify-tls=y",
            "repo1-retention-full=100",
            f"log-path={self.dirs['log']}", f"lock-path={self.dirs['lock']}", f"spool-path={self.dirs['spool']}",
            "archive-async=y", f"process-max={PGBACKREST_PROCESS_MAX}", "start-fast=y",
            "log-level-console=warn", "log-level-file=info", "io-timeout=60",
            "", f"[{STANZA}]", f"pg1-path={cluster.data}", f"pg1-port={cluster.port}",
            f"pg1-socket-path={cluster.sock_dir}", "pg1-user=postgres",
        ]
        write_private(self.conf, "\n".join(lines) + "\n")
        user.chown(self.conf)
        try:
            self.run(["stanza-create"], timeout=120)
        except Failure as e:
            self.error = f"stanza-create failed: {e.message}"

    def run(self, args, timeout, opts=()):
        return self.user.run([self.bin, f"--config={self.conf}", f"--stanza={STANZA}", *opts, *args],
                             timeout=timeout, what="pgbackrest " + args[0])

    def archive_command(self):
        return f"{self.bin} --config={self.conf} --stanza={STANZA} archive-push %p"

    def backup(self, process_max, timeout):
        self.run(["backup", "--type=full"], timeout, opts=[f"--process-max={process_max}"])

    def restore(self, data_dir, target_time, timeout):
        """Restores into the empty `data_dir` with a time target (Postgres then replays)."""
        self.run(["restore", "--type=time", f"--target={target_time}", "--target-action=promote"], timeout,
                 opts=[f"--pg1-path={data_dir}"])

    def stored_bytes(self):
        return self.s3.prefix_bytes(self.prefix)


# --- barman-cloud -----------------------------------------------------------------------------

class Barman:
    """barman-cloud from a virtualenv the Postgres OS user can run (a `pip install` as root may
    land under /root, which that user cannot reach). Credentials and the CA reach it through a
    wrapper setting AWS_SHARED_CREDENTIALS_FILE and AWS_CA_BUNDLE."""

    def __init__(self, user, root, s3, venv):
        self.user, self.s3, self.venv = user, s3, venv
        self.error = None
        self.version = None
        self.compressions = []
        self.bin = os.path.join(venv, "bin")
        if not self._usable():
            self.error = self._install()
            if self.error:
                return
            if not self._usable():
                self.error = f"{self.bin}/barman-cloud-wal-archive does not run as the Postgres OS user"
                return
        self.version = first_line([os.path.join(self.bin, "barman-cloud-wal-archive"), "--version"])
        py = os.path.join(self.bin, "python")
        self.missing = {}
        for flag, module, extra in (("--snappy", "snappy", "python-snappy"), ("--zstd", "zstandard", "zstandard")):
            if subprocess.run([py, "-c", f"import {module}"], capture_output=True).returncode == 0:
                self.compressions.append(flag)
            else:
                self.missing[flag] = f"python module {module} missing ({self.bin}/pip install {extra})"
        d = user.mkdir(os.path.join(root, "barman"), 0o700)
        creds = os.path.join(d, "credentials")
        write_private(creds, f"[default]\naws_access_key_id = {s3.access_key}\n"
                             f"aws_secret_access_key = {s3.secret_key}\n")
        user.chown(creds)
        conf = os.path.join(d, "config")
        write_private(conf, f"[default]\nregion = {s3.region}\n")
        user.chown(conf)
        self.wrapper = os.path.join(root, "barman-env")
        with open(self.wrapper, "w") as f:
            f.write("#!/bin/sh\n# barman-cloud against the benchmark's S3 server\n"
                    f"export AWS_SHARED_CREDENTIALS_FILE='{creds}' AWS_CONFIG_FILE='{conf}' "
                    f"AWS_CA_BUNDLE='{s3.ca_file}' AWS_DEFAULT_REGION='{s3.region}'\n"
                    'exec "$@"\n')
        os.chmod(self.wrapper, 0o755)

    def _usable(self):
        exe = os.path.join(self.bin, "barman-cloud-wal-archive")
        if not os.access(exe, os.X_OK):
            return False
        try:
            self.user.run([exe, "--version"], timeout=60)
            return True
        except Failure:
            return False

    def _install(self):
        info(f"barman-cloud is missing in {self.venv}: creating it with python3 -m venv and "
             "`pip install 'barman[cloud]'` (a virtualenv the Postgres OS user can run)")
        py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else shutil.which("python3")
        if py is None:
            return "python3 not found"
        if subprocess.run([py, "-c", "import ensurepip, venv"], capture_output=True).returncode != 0:
            err = apt_install("python3-venv")
            if err:
                return err
        remove_tree(self.venv)
        os.makedirs(os.path.dirname(self.venv), exist_ok=True)
        res = subprocess.run([py, "-m", "venv", self.venv], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            return f"python3 -m venv {self.venv} failed: {res.stderr.strip()[-300:]}"
        pip = os.path.join(self.bin, "pip")
        for spec in ("barman[cloud,snappy,zstandard]", "barman[cloud]"):
            res = subprocess.run([pip, "install", "--disable-pip-version-check", "-q", spec], capture_output=True,
                                 text=True, timeout=900, stdin=subprocess.DEVNULL)
            if res.returncode == 0:
                return None
            info(f"pip install '{spec}' failed: {res.stderr.strip()[-300:]}")
        return f"pip install 'barman[cloud]' into {self.venv} failed"

    def cmd(self, tool, *args):
        return [self.wrapper, os.path.join(self.bin, tool), "--endpoint-url", self.s3.endpoint, *args]

    def url(self, prefix):
        return f"s3://{self.s3.bucket}/{prefix}"

    def wal_archive_command(self, prefix, compression=None):
        parts = self.cmd("barman-cloud-wal-archive", *([compression] if compression else []), self.url(prefix),
                         STANZA, "%p")
        return " ".join(parts)

    def restore_command(self, prefix):
        return " ".join(self.cmd("barman-cloud-wal-restore", self.url(prefix), STANZA, "%f", "%p"))

    def backup(self, cluster, prefix, timeout):
        self.user.run(self.cmd("barman-cloud-backup", "--immediate-checkpoint", "-h", cluster.sock_dir,
                               "-p", str(cluster.port), "-U", "postgres", self.url(prefix), STANZA),
                      timeout=timeout, what="barman-cloud-backup")

    def restore(self, prefix, data_dir, target_time, timeout):
        """barman-cloud-restore of the backup for `target_time`, then the recovery settings
        (barman-cloud-wal-restore as restore_command, the target, promote at the end)."""
        self.user.run(self.cmd("barman-cloud-restore", "--target-time", target_time, self.url(prefix), STANZA,
                               "auto", data_dir), timeout=timeout, what="barman-cloud-restore")
        for sub in ("pg_wal", "pg_wal/archive_status"):
            p = os.path.join(data_dir, sub)
            if not os.path.isdir(p):
                self.user.mkdir(p)
        with open(os.path.join(data_dir, "postgresql.auto.conf"), "a") as f:
            f.write(f"\nrestore_command = '{self.restore_command(prefix)}'\n"
                    f"recovery_target_time = '{target_time}'\nrecovery_target_action = 'promote'\n")
        signal_file = os.path.join(data_dir, "recovery.signal")
        open(signal_file, "w").close()
        self.user.chown(signal_file)

    def stored_bytes(self, prefix):
        return self.s3.prefix_bytes(prefix)

