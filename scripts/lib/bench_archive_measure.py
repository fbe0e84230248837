"""The measurements of `scripts/bench-archive`, each returning plain dicts for the report:

  archive_backlog  one tool archives a backlog of .ready segments made while it could not;
  lag_window       the .ready backlog, sampled every second, under pgbench load;
  base backups     one full backup per tool of the same-size database;
  pitr             fetch + replay to a time target after a given amount of WAL, per tool.

The plain cluster serves every anchor (its archive_command is switched with ALTER SYSTEM and a
reload); pgwarden's instance has its own Postgres with the same settings.
"""

import datetime
import json
import os
import re
import subprocess
import time

from bench_archive_env import (
    CLEANUPS, Failure, OthersCpu, cpu_seconds, PlainPostgres, Pgwarden, RssSampler, data_bytes, dir_bytes, info, kill_proc,
    ready_files, remove_tree, wait_sql,
)
from pgwarden_local import lsn_to_int

SEGMENT = 16 << 20
MIB = 1 << 20
# The write-heavy load of the lag windows and of the WAL before a PITR target: pgbench's
# simple-update (one random account, with its full-page writes after a checkpoint) plus ROWS
# rows of 64 random hex characters, so that the WAL does not compress to nothing. The PITR
# writer uses more rows per transaction: the same kind of WAL, written faster.
WRITE_SCRIPT = """\\set aid random(1, 100000 * :scale)
\\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO bench_fill (aid, payload) SELECT :aid, md5(random()::text) || md5(random()::text) FROM generate_series(1, ROWS);
"""
LAG_ROWS, PITR_ROWS = 16, 128
FILL_TABLE = "CREATE TABLE IF NOT EXISTS bench_fill (aid int, payload text)"


def load1():
    return os.getloadavg()[0]


class Bench:
    """Holds the clusters and tools of one benchmark run and measures with them."""

    def __init__(self, args, user, bin_dir, root, s3, secrets, plain, pgw, pgbr, barman, manager_bin):
        self.args, self.user, self.bin_dir, self.root = args, user, bin_dir, root
        self.s3, self.secrets, self.plain, self.pgw = s3, secrets, plain, pgw
        self.pgbr, self.barman, self.manager_bin = pgbr, barman, manager_bin
        self.cp_dir = user.mkdir(os.path.join(root, "cp-archive"))
        self.loads = []
        self.scripts = {}
        for name, rows in (("lag", LAG_ROWS), ("pitr", PITR_ROWS)):
            self.scripts[name] = os.path.join(root, f"write-heavy-{name}.sql")
            with open(self.scripts[name], "w") as f:
                f.write(WRITE_SCRIPT.replace("ROWS", str(rows)))

    def write_load(self, seconds, kind="lag"):
        """pgbench arguments of the write-heavy load (4 clients, 2 threads)."""
        return ["-n", "-f", self.scripts[kind], "-s", str(self.args.scale), "-c", "4", "-j", "2", "-T", str(seconds)]

    def reset_growth(self):
        """Empties what the write-heavy load inserts, so that every base backup copies the same
        database (pgbench -i's tables, give or take the dead rows of the updates)."""
        for target in (self.pgw, self.plain):
            target.sql("TRUNCATE bench_fill, pgbench_history")
            target.sql("CHECKPOINT", timeout=300)

    # -- helpers --
    def pgbench(self, target, args, timeout, popen_log=None):
        cmd = [os.path.join(self.bin_dir, "pgbench"), "-h", "127.0.0.1", "-p", str(target.port), "-U", "postgres",
               *args, "postgres"]
        env = dict(os.environ, PGPASSWORD=target.password or "")
        if popen_log:
            with open(popen_log, "wb") as f:
                return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Failure(f"pgbench {' '.join(args)} did not finish within {timeout} s") from None
        if res.returncode != 0:
            raise Failure(f"pgbench {' '.join(args)} failed: {(res.stdout + res.stderr).strip()[-500:]}")
        return res.stdout + res.stderr

    def lsn(self, target):
        return lsn_to_int(target.sql("SELECT pg_current_wal_lsn()")[0][0])

    def archiver(self, target):
        row = target.sql("SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver")[0]
        return int(row[0]), int(row[1]), row[2]

    def wait_drained(self, target, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not ready_files(target.data):
                return
            time.sleep(0.1)
        raise Failure(f"{what}: {len(ready_files(target.data))} WAL files still not archived after {timeout} s")

    def wait_archived(self, target, wal, timeout, what):
        wait_sql(target.port, "SELECT last_archived_wal FROM pg_stat_archiver", target.password, timeout,
                 lambda rows: (rows[0][0] or "") >= wal, f"{what}: {wal} archived")

    def note_load(self):
        self.loads.append(load1())

    # -- the archive tools --
    def archive_tools(self, quick):
        d = self.cp_dir
        tools = [
            {"key": "pgwarden", "label": "pgwarden (zstd, maxParallel 4)"},
            {"key": "cp", "label": "cp to a local directory (ceiling)",
             "command": f"test ! -f {d}/%f && cp %p {d}/%f", "stored": lambda: dir_bytes(d)},
        ]
        pb = self.pgbr
        tools.append({"key": "pgbackrest", "label": "pgBackRest archive-push async (process-max 4, gz)",
                      "error": pb.error, "command": None if pb.error else pb.archive_command(),
                      "stored": None if pb.error else pb.stored_bytes})
        b = self.barman
        variants = [(None, "uncompressed")] + [(f, f) for f in ("--snappy", "--zstd")]
        for flag, name in variants:
            key = "barman" + (flag.replace("--", "-") if flag else "")
            # The compressed variants are extras: one run each keeps a full run under 40 minutes.
            tool = {"key": key, "label": f"barman-cloud-wal-archive ({name})", "error": b.error, "once": bool(flag)}
            if not b.error and flag and flag not in b.compressions:
                tool["error"] = b.missing.get(flag, "not available")
            elif not b.error and flag and quick:
                tool["error"] = "skipped by --quick"
            if not tool["error"]:
                prefix = "wal-" + key
                tool["command"] = b.wal_archive_command(prefix, flag)
                tool["stored"] = (lambda p=prefix: b.stored_bytes(p))
            tools.append(tool)
        return tools

    def target_of(self, tool):
        return self.pgw if tool["key"] == "pgwarden" else self.plain

    def stored(self, tool):
        if tool["key"] == "pgwarden":
            return self.s3.prefix_bytes("pgwarden")
        return tool["stored"]()

    def open_archive(self, tool):
        """Lets `tool` archive now (the timer runs from before this)."""
        if tool["key"] == "pgwarden":
            self.pgw.gate_archive(False)
            self.pgw.sql("SELECT pg_reload_conf()")  # wakes Postgres' archiver at once
        else:
            self.plain.set_archive_command(tool["command"])

    def close_archive(self, tool):
        if tool["key"] == "pgwarden":
            self.pgw.gate_archive(True)
        else:
            self.plain.set_archive_command("")

    def archive_backlog(self, tool, scale):
        """Seconds for `tool` to archive the backlog `pgbench -i -I dtG -s scale` leaves."""
        target = self.target_of(tool)
        self.wait_drained(target, self.args.timeout, f"{tool['key']}: before the backlog")
        self.close_archive(tool)
        try:
            self.pgbench(target, ["-i", "-I", "dtG", "-s", str(scale), "-q"], self.args.timeout)
            # Postgres' archiver sleeps 1 s between failed tries, deaf to a reload: let its round end.
            time.sleep(3.5)
        except BaseException:
            self.open_archive(tool)
            raise
        backlog = ready_files(target.data)
        stored0 = self.stored(tool)
        _, failed0, _ = self.archiver(target)
        rss = RssSampler(self.pgw.proc.pid) if tool["key"] == "pgwarden" else None
        self.note_load()
        others = OthersCpu(self.root)
        cpu0 = {"manager": cpu_seconds(self.pgw.proc.pid), "s3": cpu_seconds(self.s3.proc.pid)}
        t0 = time.monotonic()
        self.open_archive(tool)
        deadline = t0 + self.args.timeout
        left = backlog
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = backlog & ready_files(target.data)
        seconds = time.monotonic() - t0
        others_cpu, ours = others.stop()
        out = {"segments": len(backlog), "seconds": seconds, "others_cpu": others_cpu, "cpu_seconds": ours,
               "s3_cpu_seconds": cpu_seconds(self.s3.proc.pid) - cpu0["s3"]}
        if tool["key"] == "pgwarden":
            out["manager_cpu_seconds"] = cpu_seconds(self.pgw.proc.pid) - cpu0["manager"]
        if rss:
            out["rss"] = rss.stop()
        if left:
            out["error"] = f"{len(left)} of {len(backlog)} segments not archived after {self.args.timeout} s"
            return out
        _, failed1, _ = self.archiver(target)
        out["failures"] = failed1 - failed0
        out["seg_per_s"] = len(backlog) / seconds
        out["stored_bytes"] = self.stored(tool) - stored0
        if tool["key"] == "cp":
            for f in os.listdir(self.cp_dir):  # keep the disk from filling over the runs
                os.unlink(os.path.join(self.cp_dir, f))
        return out

    # -- lag under load --
    def lag_window(self, tool, seconds):
        """The .ready backlog sampled every second during `pgbench -c 4 -j 2 -T seconds` (write-heavy)."""
        target = self.target_of(tool)
        if tool["key"] != "pgwarden":
            self.plain.set_archive_command(tool["command"])
        self.wait_drained(target, self.args.timeout, f"{tool['key']}: before the load")
        target.sql("CHECKPOINT", timeout=300)  # each window starts with the same full-page writes
        lsn0 = self.lsn(target)
        log = os.path.join(self.root, f"pgbench-lag-{tool['key']}.log")
        rss = RssSampler(self.pgw.proc.pid) if tool["key"] == "pgwarden" else None
        self.note_load()
        others = OthersCpu(self.root)
        proc = self.pgbench(target, self.write_load(seconds), 0, popen_log=log)
        CLEANUPS.add(kill_proc, proc)
        samples = []
        t0 = time.monotonic()
        limit = t0 + seconds + 60
        while proc.poll() is None and time.monotonic() < limit:
            nxt = t0 + len(samples) + 1
            time.sleep(max(0.0, nxt - time.monotonic()))
            if proc.poll() is None:
                samples.append(len(ready_files(target.data)))
        if proc.poll() is None:
            kill_proc(proc)
            raise Failure(f"pgbench under {tool['key']} did not end within {seconds + 60} s")
        t_end = time.monotonic()
        others_cpu = others.stop()[0]
        with open(log, errors="replace") as f:
            text = f.read()
        m = re.search(r"tps = ([0-9.]+)", text)
        wal = self.lsn(target) - lsn0
        deadline = t_end + self.args.timeout
        while ready_files(target.data) and time.monotonic() < deadline:
            time.sleep(0.1)
        drained = time.monotonic() - t_end if not ready_files(target.data) else None
        out = {"samples": samples, "tps": float(m.group(1)) if m else None, "wal_bytes": wal,
               "seconds": t_end - t0, "drained_after": drained, "others_cpu": others_cpu}
        if proc.returncode != 0:
            out["error"] = f"pgbench exited with {proc.returncode}: {text.strip()[-300:]}"
        if rss:
            out["rss"] = rss.stop()
        return out

    # -- base backups --
    def backup_tools(self):
        pb, b = self.pgbr, self.barman
        return [
            {"key": "pgwarden", "label": "pgwarden backup create (zstd, 16 MiB parts, maxParallel 4)"},
            {"key": "pgbb-Fp", "label": "pg_basebackup -Fp to a local directory"},
            {"key": "pgbb-Ftz", "label": "pg_basebackup -Ft -z to a local directory"},
            {"key": "pgbackrest-p2", "label": "pgBackRest backup --type=full (process-max 2, gz)", "error": pb.error},
            {"key": "pgbackrest-p4", "label": "pgBackRest backup --type=full (process-max 4, gz)", "error": pb.error},
            {"key": "barman", "label": "barman-cloud-backup (uncompressed, 2 jobs)", "error": b.error},
        ]

    def plain_archive_for_backups(self):
        """The plain cluster archives to both pgBackRest's and barman's stores from here on (the
        PITR restores replay from them)."""
        cmds = [c for c in ((None if self.pgbr.error else self.pgbr.archive_command()),
                            (None if self.barman.error else self.barman.wal_archive_command("barman"))) if c]
        self.plain.set_archive_command(" && ".join(cmds) if cmds else "/bin/true")

    def base_backup(self, tool, run):
        key = tool["key"]
        t = self.args.timeout
        target = self.pgw if key == "pgwarden" else self.plain
        size = data_bytes(target.data)
        rss = None
        self.note_load()
        others = OthersCpu(self.root)
        if key == "pgwarden":
            rss = RssSampler(self.pgw.proc.pid)
            t0 = time.monotonic()
            doc = self.pgw.backup(timeout=t)
            seconds = time.monotonic() - t0
            stored = doc.get("storedBytes")
        elif key.startswith("pgbb"):
            dest = os.path.join(self.root, f"pg_basebackup-{run}")
            fmt = ["-Fp"] if key == "pgbb-Fp" else ["-Ft", "-z"]
            cmd = [os.path.join(self.bin_dir, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.plain.port),
                   "-U", "postgres", "-D", dest, *fmt, "-X", "stream", "--checkpoint=fast"]
            t0 = time.monotonic()
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=t, stdin=subprocess.DEVNULL)
            seconds = time.monotonic() - t0
            stored = dir_bytes(dest)
            remove_tree(dest)
            if res.returncode != 0:
                raise Failure(f"pg_basebackup {' '.join(fmt)} failed: {res.stderr.strip()[-400:]}")
        elif key.startswith("pgbackrest"):
            before = self.pgbr.stored_bytes()
            t0 = time.monotonic()
            self.pgbr.backup(int(key[-1]), t)
            seconds = time.monotonic() - t0
            stored = self.pgbr.stored_bytes() - before
        else:
            before = self.barman.stored_bytes("barman")
            t0 = time.monotonic()
            self.barman.backup(self.plain, "barman", t)
            seconds = time.monotonic() - t0
            stored = self.barman.stored_bytes("barman") - before
        out = {"seconds": seconds, "data_bytes": size, "stored_bytes": stored, "mib_per_s": size / MIB / seconds,
               "others_cpu": others.stop()[0]}
        if rss:
            out["rss"] = rss.stop()
        return out

    # -- point-in-time recovery --
    def write_wal(self, target, mib):
        """The write-heavy load in 5-s rounds until `mib` MiB of WAL were written."""
        lsn0 = self.lsn(target)
        for _ in range(200):
            self.pgbench(target, self.write_load(5, "pitr"), 120)
            if self.lsn(target) - lsn0 >= mib * MIB:
                return self.lsn(target) - lsn0
        raise Failure(f"fewer than {mib} MiB of WAL after 200 rounds of pgbench")

    def prepare_pitr(self, run, mib):
        """WAL after the backups, a marker row before the target time and one after, everything
        archived. Returns (target time, {cluster: WAL bytes written after the backup})."""
        targets = [("pgwarden", self.pgw), ("plain", self.plain)]
        wal = {}
        for name, target in targets:
            target.sql("CREATE TABLE IF NOT EXISTS bench_pitr (run int, phase text)")
            wal[name] = self.write_wal(target, mib)
            target.sql(f"INSERT INTO bench_pitr VALUES ({run}, 'before')")
        time.sleep(1.1)
        when = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(1.1)
        for name, target in targets:
            target.sql(f"INSERT INTO bench_pitr VALUES ({run}, 'after')")
            wal_file = target.sql("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
            self.wait_archived(target, wal_file, self.args.timeout, f"{name} before the restores")
        return when, wal

    def restore(self, key, run, when):
        """Seconds from the restore's start until the restored server is promoted and answers."""
        t = self.args.timeout
        mark = CLEANUPS.mark()
        self.note_load()
        others = OthersCpu(self.root)
        try:
            if key == "pgwarden":
                rfc = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                inst = Pgwarden(self.manager_bin, self.bin_dir, self.root, f"restore-pgwarden-{run}", self.s3,
                                "pgwarden", self.secrets, t, recovery=rfc)
                t0, wall0 = time.monotonic(), time.time()
                inst.spawn()
                inst.wait_ready(t)
                seconds = time.monotonic() - t0
                fetched = log_time(inst.log, "base backup restored")
                fetch = fetched - wall0 if fetched else None
                rows = inst.sql(f"SELECT string_agg(phase, ',' ORDER BY phase) FROM bench_pitr WHERE run = {run}")
                where = inst.dir
            else:
                pg_time = when.strftime("%Y-%m-%d %H:%M:%S.%f+00")
                inst = PlainPostgres(self.user, self.bin_dir, self.root, f"restore-{key}-{run}", t)
                self.user.mkdir(inst.data)
                t0 = time.monotonic()
                if key == "pgbackrest":
                    self.pgbr.restore(inst.data, pg_time, t)
                else:
                    self.barman.restore("barman", inst.data, pg_time, t)
                fetch = time.monotonic() - t0
                inst.start({"archive_mode": "off"})
                wait_sql(inst.port, "SELECT pg_is_in_recovery()", None, t, lambda r: r[0][0] == "f",
                         f"{key}: the restored server promoted")
                seconds = time.monotonic() - t0
                rows = inst.sql(f"SELECT string_agg(phase, ',' ORDER BY phase) FROM bench_pitr WHERE run = {run}")
                where = inst.dir
            others_cpu = others.stop()[0]
        finally:
            CLEANUPS.run(mark)
        remove_tree(where)
        found = rows[0][0] if rows else None
        return {"seconds": seconds, "fetch_seconds": fetch, "correct": found == "before", "found": found,
                "others_cpu": others_cpu}


def log_time(path, message):
    """Epoch seconds of the first line of a manager's JSON log with this message, or None."""
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if f'"message":"{message}"' in line:
                    ts = json.loads(line).get("timestamp", "")
                    return datetime.datetime.fromisoformat(ts[:26].rstrip("Z") + "+00:00").timestamp()
    except (OSError, ValueError):
        pass
    return None


def info_step(msg):
    info(f"[{time.strftime('%H:%M:%S')}] {msg}")
