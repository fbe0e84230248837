"""The tables of `scripts/bench-archive`: one per measurement, medians (min–max) over the runs
per tool, the goals of issue 4 as ratios within the same run, and a reason wherever a tool has
no number."""

import statistics

MIB = 1 << 20

GOALS = {
    "archive_vs_pgbackrest": 4.0,   # pgwarden seg/s >= 4x pgBackRest async
    "archive_vs_cp": 0.60,          # >= 60 % of cp
    "lag_segments": 2,              # backlog under pgbench <= 2 segments
    "backup_vs_pgbackrest": 2.0,    # MiB/s >= 2x pgBackRest (the better of its two settings)
    "backup_vs_pgbb": 0.60,         # >= 60 % of pg_basebackup -Fp
    "pitr_vs_pgbackrest": 0.5,      # time <= half of pgBackRest's
    "rss_mb": 30.0,                 # manager RSS while archiving
}


def table(rows):
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def med(values):
    return statistics.median(values) if values else None


def spread(values, fmt):
    """'12.3 (11.0–13.1)' for several runs, '12.3' for one."""
    if not values:
        return None
    m = fmt.format(med(values))
    return m if len(values) == 1 else f"{m} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def others(runs):
    """Median share of the CPUs other jobs used during these runs (not this benchmark's processes)."""
    v = [r["others_cpu"] for r in runs if r.get("others_cpu") is not None]
    return f"{med(v) * 100:.0f} %" if v else ""


def verdict(ok):
    return "ok" if ok else "MISSED"


def ok_runs(runs, key):
    return [r[key] for r in runs if not r.get("error") and r.get(key) is not None]


def failed_note(runs):
    bad = [r["error"] for r in runs if r.get("error")]
    return f"{len(bad)} of {len(runs)} runs FAILED: {bad[0][:120]}" if bad else ""


def print_archive(res, tools):
    print("1. WAL archive throughput: a backlog of .ready segments made while the tool could not archive "
          "(pgbench -i -I dtG), timed from letting it archive until every one of them is archived")
    rows = [["tool", "segments/s", "backlog", "WAL MiB/s", "stored / WAL", "CPU ms/seg (S3 server)", "failed calls",
             "others' CPU", "note"]]
    meds = {}
    for t in tools:
        runs = res.get(t["key"], [])
        if t.get("error"):
            rows.append([t["label"], "n/a", "", "", "", "", "", "", t["error"]])
            continue
        v = ok_runs(runs, "seg_per_s")
        meds[t["key"]] = med(v)
        segs = ok_runs(runs, "segments")
        stored = [r["stored_bytes"] / (r["segments"] * 16 * MIB) for r in runs if r.get("stored_bytes") is not None
                  and not r.get("error") and r["segments"]]
        fails = sum(r.get("failures") or 0 for r in runs)
        cpu = [r["cpu_seconds"] * 1000 / r["segments"] for r in runs if r.get("cpu_seconds") and r.get("segments")]
        s3 = [r["s3_cpu_seconds"] * 1000 / r["segments"] for r in runs if r.get("cpu_seconds") and r.get("segments")]
        cpu_cell = f"{med(cpu):.0f} ({med(s3):.0f})" if cpu else ""
        if t["key"] == "pgbackrest":  # its async archiver detaches: its CPU time escapes the count
            cpu_cell = f"n/a ({med(s3):.0f})" if s3 else "n/a"
        rows.append([t["label"], spread(v, "{:.1f}") or "FAILED", f"{med(segs):.0f} seg" if segs else "",
                     f"{med(v) * 16:.0f}" if v else "", f"{med(stored) * 100:.0f} %" if stored else "",
                     cpu_cell, str(fails), others(runs),
                     failed_note(runs) or ("1 run only (an extra)" if t.get("once") and len(runs) == 1 else "")])
    print(table(rows))
    print("   CPU ms/seg: CPU time of every process of this benchmark (Postgres' archiver and what it runs, the "
          "tool, the manager, the S3 server) per archived segment; in brackets the S3 server's share. pgBackRest's "
          "async archiver detaches from Postgres: once it has exited its CPU is counted in others' CPU, not here")
    pw_runs = [r for r in res.get("pgwarden", []) if r.get("manager_cpu_seconds") is not None]
    if pw_runs:
        mgr = med([r["manager_cpu_seconds"] * 1000 / r["segments"] for r in pw_runs])
        print(f"   pgwarden's manager alone: {mgr:.0f} ms CPU per segment (read, zstd, TLS upload)")
    pw, pb, cp = meds.get("pgwarden"), meds.get("pgbackrest"), meds.get("cp")
    if pw and pb:
        r = pw / pb
        print(f"   goal: pgwarden >= {GOALS['archive_vs_pgbackrest']:g}x pgBackRest async: {r:.1f}x  "
              f"{verdict(r >= GOALS['archive_vs_pgbackrest'])}")
    if pw and cp:
        r = pw / cp
        print(f"   goal: pgwarden >= {GOALS['archive_vs_cp'] * 100:.0f} % of cp: {r * 100:.0f} %  "
              f"{verdict(r >= GOALS['archive_vs_cp'])}")
    print()


def print_lag(res, tools, seconds):
    print(f"2. Archive lag under load: pgbench -c 4 -j 2 -T {seconds} of a write-heavy script (simple-update + "
          "16 rows of random text per transaction) after a CHECKPOINT; .ready files counted every second "
          "(one window per tool)")
    rows = [["tool", "backlog median", "backlog max", "WAL written", "tps", "drained after load", "others' CPU", "goal"]]
    for t in tools:
        if t.get("error"):
            rows.append([t["label"], "n/a", "", "", "", "", "", t["error"]])
            continue
        r = res.get(t["key"])
        if r is None:
            continue
        s = r.get("samples") or []
        if r.get("error") or not s:
            rows.append([t["label"], "FAILED", "", "", "", "", "", (r.get("error") or "no samples")[:120]])
            continue
        wal_mib = r["wal_bytes"] / MIB
        goal = ""
        if t["key"] == "pgwarden":
            goal = f"<= {GOALS['lag_segments']} seg: {verdict(max(s) <= GOALS['lag_segments'])}"
        drained = f"{r['drained_after']:.1f} s" if r.get("drained_after") is not None else "not drained"
        rows.append([t["label"], f"{med(s):.0f} seg", f"{max(s)} seg",
                     f"{wal_mib:.0f} MiB ({wal_mib / 16 / r['seconds']:.2f} seg/s)",
                     f"{r['tps']:.0f}" if r.get("tps") else "?", drained, others([r]), goal])
    print(table(rows))
    print()


def print_backup(res, tools):
    print("3. Base backup of the same-size database (pgbench -i), MiB/s = data directory without pg_wal / "
          "wall-clock time of the backup command")
    rows = [["tool", "MiB/s", "seconds", "data", "stored", "others' CPU", "note"]]
    meds = {}
    for t in tools:
        runs = res.get(t["key"], [])
        if t.get("error"):
            rows.append([t["label"], "n/a", "", "", "", "", t["error"]])
            continue
        v = ok_runs(runs, "mib_per_s")
        meds[t["key"]] = med(v)
        secs = ok_runs(runs, "seconds")
        data = ok_runs(runs, "data_bytes")
        stored = ok_runs(runs, "stored_bytes")
        rows.append([t["label"], spread(v, "{:.0f}") or "FAILED", f"{med(secs):.1f}" if secs else "",
                     f"{med(data) / MIB:.0f} MiB" if data else "", f"{med(stored) / MIB:.0f} MiB" if stored else "",
                     others(runs), failed_note(runs)])
    print(table(rows))
    pw = meds.get("pgwarden")
    pbs = [m for k, m in meds.items() if k.startswith("pgbackrest") and m]
    if pw and pbs:
        r = pw / max(pbs)
        print(f"   goal: pgwarden >= {GOALS['backup_vs_pgbackrest']:g}x pgBackRest (its faster setting): {r:.1f}x  "
              f"{verdict(r >= GOALS['backup_vs_pgbackrest'])}")
    if pw and meds.get("pgbb-Fp"):
        r = pw / meds["pgbb-Fp"]
        print(f"   goal: pgwarden >= {GOALS['backup_vs_pgbb'] * 100:.0f} % of pg_basebackup -Fp: {r * 100:.0f} %  "
              f"{verdict(r >= GOALS['backup_vs_pgbb'])}")
    print()


def print_pitr(res, tools, wal):
    print("4. Point-in-time recovery to a time target: from the restore's start until the restored server "
          "is promoted and answers; fetch = until the data directory is restored (pgwarden: its 'base backup "
          "restored' log line), replay = the rest (Postgres start, WAL fetch and replay, promotion)")
    rows = [["tool", "seconds", "fetch + replay", "WAL after the backup", "rows at the target", "others' CPU",
             "note"]]
    meds = {}
    for t in tools:
        runs = res.get(t["key"], [])
        if t.get("error"):
            rows.append([t["label"], "n/a", "", "", "", "", t["error"]])
            continue
        v = ok_runs(runs, "seconds")
        meds[t["key"]] = med(v)
        fetch = ok_runs(runs, "fetch_seconds")
        split = f"{med(fetch):.1f} + {med(v) - med(fetch):.1f}" if fetch and v else ""
        w = wal.get("pgwarden" if t["key"] == "pgwarden" else "plain", [])
        good = [r for r in runs if not r.get("error")]
        correct = sum(1 for r in good if r.get("correct"))
        wrong = [r.get("found") for r in good if not r.get("correct")]
        rows.append([t["label"], spread(v, "{:.1f}") or "FAILED", split, f"{med(w) / MIB:.0f} MiB" if w else "",
                     (f"{correct}/{len(good)} exact" + (f", WRONG: {wrong[0]!r}" if wrong else "")) if good else "",
                     others(runs), failed_note(runs)])
    print(table(rows))
    pw, pb = meds.get("pgwarden"), meds.get("pgbackrest")
    if pw and pb:
        r = pw / pb
        print(f"   goal: pgwarden <= {GOALS['pitr_vs_pgbackrest'] * 100:.0f} % of pgBackRest's time: {r * 100:.0f} %  "
              f"{verdict(r <= GOALS['pitr_vs_pgbackrest'])}")
    print()


def print_rss(windows):
    print("5. instance-manager memory: max VmRSS sampled every 100 ms, and VmHWM (the kernel's peak, reset "
          "at the start of each window)")
    rows = [["while", "max VmRSS", "VmHWM", "goal"]]
    for label, items, goal in windows:
        if not items:
            continue
        mx = [i["max_rss_mb"] for i in items]
        hwm = [i["hwm_mb"] for i in items if i.get("hwm_mb") is not None]
        g = f"<= {GOALS['rss_mb']:g} MB: {verdict(max(mx) <= GOALS['rss_mb'])}" if goal else "(no goal)"
        rows.append([label, spread(mx, "{:.1f}") + " MB", (spread(hwm, "{:.1f}") + " MB") if hwm else "?", g])
    print(table(rows))
    print()
