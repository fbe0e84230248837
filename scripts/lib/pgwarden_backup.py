"""The backup side of a local pgwarden cluster: where its WAL archive goes (`backup.store`), a
recovery bootstrap from another cluster's backups (`bootstrap.recovery`): the flags of `up` that
choose them, the checks it makes before writing anything, both InstanceConfig sections (as
data), and the archive/backup lines of `status`.

Store specs are kept in cluster.json with the InstanceConfig's own (camelCase) keys, so they go
into the configuration as they are. Python 3 standard library only; failures raise `Failure`.
"""

import datetime
import glob
import os
import urllib.parse

from pgwarden_local import Failure

ARCHIVE_DIR = "archive"
SCHEMES = ("file", "s3", "gs", "az")
# S3 credentials copied from the environment into the cluster's secrets directory (0600), so a
# later `start` without those variables still archives.
S3_KEY_SECRETS = {"accessKeyIdFile": "s3_access_key_id", "secretAccessKeyFile": "s3_secret_access_key"}
S3_FIELDS = ("endpoint", "region", "accessKeyIdFile", "secretAccessKeyFile", "caFile")
TARGET_KINDS = ("time", "lsn", "xid", "name", "immediate")


# --- store URLs -------------------------------------------------------------------------------

def store_url(text, flag):
    """`file:///abs`, `s3://bucket/prefix`, ... from what the user typed; a plain path (relative
    or absolute) means a local directory."""
    if "://" not in text:
        return "file://" + os.path.abspath(text)
    scheme, rest = text.split("://", 1)
    if scheme not in SCHEMES:
        raise Failure(f"{flag} {text}: unknown store {scheme}://",
                      "use file:///absolute/dir (or a plain path), s3://bucket/prefix, gs://bucket/prefix "
                      "or az://container/prefix")
    if scheme == "file":
        if not rest.startswith("/"):
            raise Failure(f"{flag} {text}: a file:// URL needs an absolute path (file:///dir)",
                          "or pass the directory as a plain path")
        return "file://" + os.path.normpath(urllib.parse.unquote(rest))
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise Failure(f"{flag} {text}: no bucket", f"write it {scheme}://bucket/prefix")
    return f"{scheme}://{rest.rstrip('/')}"


def file_dir(url):
    """The directory of a file:// URL, None for other stores."""
    return url[len("file://"):] if url.startswith("file://") else None


def store_spec(url, s3):
    """A StoreSpec dict; `s3` (the S3 settings of the command line) only for s3:// URLs."""
    spec = {"destination": url}
    if url.startswith("s3://") and s3:
        spec["s3"] = dict(s3)
    return spec


def s3_settings(args, env=None):
    """The S3 settings of `up` (one set for every s3:// URL of the command), and the secrets to
    write {secret name: value} when the keys come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
    Raises when an s3:// store would have no credentials at all."""
    env = os.environ if env is None else env
    s3 = {}
    endpoint = args.s3_endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = args.s3_region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if endpoint:
        s3["endpoint"] = endpoint
    if region:
        s3["region"] = region
    for field, path, flag in (("accessKeyIdFile", args.s3_access_key_file, "--s3-access-key-file"),
                              ("secretAccessKeyFile", args.s3_secret_key_file, "--s3-secret-key-file"),
                              ("caFile", args.s3_ca_file, "--s3-ca-file")):
        if path:
            path = os.path.abspath(path)
            if not os.path.isfile(path):
                raise Failure(f"{flag} {path}: no such file")
            s3[field] = path
    pending = {}
    for field, var in (("accessKeyIdFile", "AWS_ACCESS_KEY_ID"), ("secretAccessKeyFile", "AWS_SECRET_ACCESS_KEY")):
        if field not in s3 and env.get(var):
            pending[S3_KEY_SECRETS[field]] = env[var]
            s3[field] = {"secret": S3_KEY_SECRETS[field]}  # resolved to the cluster's secrets/ when rendered
    return s3, pending


def require_s3_keys(spec, flag):
    s3 = spec.get("s3") or {}
    if spec["destination"].startswith("s3://") and not ("accessKeyIdFile" in s3 and "secretAccessKeyFile" in s3):
        raise Failure(f"{flag} {spec['destination']}: no S3 credentials",
                      "pass --s3-access-key-file F and --s3-secret-key-file F, or set AWS_ACCESS_KEY_ID and "
                      "AWS_SECRET_ACCESS_KEY (copied into DIR/secrets/); --s3-endpoint for a non-AWS store")


# --- recovery ---------------------------------------------------------------------------------

def target_time(text):
    """RFC 3339 in UTC from what `select now()` prints or any ISO 8601 time with a zone."""
    try:
        t = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise Failure(f"--target-time {text!r} is not a timestamp",
                      "write it like 2026-11-30T12:00:00Z or as psql prints now(): '2026-11-30 12:00:00.123+00'") from None
    if t.tzinfo is None:
        raise Failure(f"--target-time {text!r} has no time zone",
                      "add one (Z, +00, +02:00): the same wall time means different moments in different zones")
    # `+00:00`, not `Z`: Postgres reads recovery_target_time before it has loaded the time zone
    # abbreviations, and refuses `Z` there ("invalid value for parameter").
    return t.astimezone(datetime.timezone.utc).isoformat(timespec="microseconds")


def recovery_target(args):
    """The `target` of bootstrap.recovery from the --target-* flags, None for the end of the archive."""
    given = [(k, getattr(args, "target_" + k)) for k in TARGET_KINDS if getattr(args, "target_" + k)]
    if len(given) > 1:
        raise Failure("more than one recovery target: " + ", ".join("--target-" + k for k, _ in given),
                      "keep one of --target-time, --target-lsn, --target-xid, --target-name, --target-immediate")
    if not given:
        return None
    kind, value = given[0]
    if kind == "immediate":
        return {"immediate": True}
    if kind == "time":
        value = target_time(value)
    return {kind: str(value)}


def file_archive_clusters(directory):
    """Names of the clusters archived under a local directory (those with a cluster.json)."""
    return sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(directory, "*", "cluster.json")))


def file_backups(directory, cluster):
    """Ids of the complete base backups (backup.json written) of `cluster` under a local directory."""
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(directory, cluster, "base", "*", "backup.json")))


def recovery_spec(url, s3, source_cluster, backup_id, target, default_source, cmd):
    """The bootstrap.recovery dict; for a local directory, checks now that it holds the source
    cluster and a base backup (the managers would only find out after `up` has started them)."""
    spec = {"store": store_spec(url, s3)}
    directory = file_dir(url)
    if directory is not None:
        if not os.path.isdir(directory):
            raise Failure(f"--restore-from {url}: {directory} does not exist",
                          "point it at the archive of a cluster (a local cluster's is DIR/archive)")
        found = file_archive_clusters(directory)
        if source_cluster is None:
            if len(found) > 1:
                raise Failure(f"--restore-from {url} holds the archives of several clusters: {', '.join(found)}",
                              "choose one with --source-cluster NAME")
            if not found:
                raise Failure(f"--restore-from {url}: no cluster archive there (no {directory}/<cluster>/cluster.json)",
                              "point it at the archive of a cluster (a local cluster's is DIR/archive)")
            source_cluster = found[0]
        elif source_cluster not in found:
            raise Failure(f"--restore-from {url} holds no archive of cluster {source_cluster!r}"
                          + (f" (it holds: {', '.join(found)})" if found else ""),
                          "check --source-cluster")
        backups = file_backups(directory, source_cluster)
        if not backups:
            raise Failure(f"--restore-from {url}: cluster {source_cluster!r} has archived WAL but no base backup",
                          f"take one on the source cluster: `{cmd} --dir SOURCE_DIR backup create`")
        if backup_id and backup_id not in backups:
            raise Failure(f"--backup-id {backup_id}: no such backup of cluster {source_cluster!r} in {url}",
                          "backups there: " + ", ".join(backups))
    spec["sourceCluster"] = source_cluster or default_source
    if backup_id:
        spec["backupId"] = backup_id
    if target:
        spec["target"] = target
    return spec


# --- the flags of `up` ------------------------------------------------------------------------

def add_backup_flags(up, default_cluster):
    """The archive and restore flags of `up`."""
    g = up.add_argument_group("WAL archive and base backups (fixed when the cluster is created)")
    g.add_argument("--cluster", metavar="NAME",
                   help=f"cluster name: the archive keeps each cluster under STORE/NAME/ (default {default_cluster})")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--archive", metavar="URL",
                       help="where WAL and base backups go: a directory, file:///dir, s3://bucket/prefix, gs://, "
                            "az:// (default: file://DIR/archive)")
    where.add_argument("--no-archive", action="store_true", help="no WAL archive, no base backups")
    g.add_argument("--s3-endpoint", metavar="URL", help="an S3-compatible endpoint (default $AWS_ENDPOINT_URL; "
                                                         "absent: AWS)")
    g.add_argument("--s3-region", metavar="REGION", help="default $AWS_REGION, else us-east-1")
    g.add_argument("--s3-access-key-file", metavar="FILE",
                   help="file holding the access key id (default: $AWS_ACCESS_KEY_ID, copied into DIR/secrets/)")
    g.add_argument("--s3-secret-key-file", metavar="FILE",
                   help="file holding the secret access key (default: $AWS_SECRET_ACCESS_KEY, copied likewise)")
    g.add_argument("--s3-ca-file", metavar="FILE", help="PEM CA certificates to trust for the endpoint")
    r = up.add_argument_group("restore: a new cluster from a backup and archived WAL (point-in-time recovery)")
    r.add_argument("--restore-from", metavar="URL",
                   help="the source cluster's store (a local cluster's: its DIR/archive); the lease holder restores, "
                        "the other instances clone it")
    r.add_argument("--source-cluster", metavar="NAME",
                   help=f"the cluster that took the backups (default: the only one in a local store, else {default_cluster})")
    r.add_argument("--backup-id", metavar="ID", help="the backup to restore (default: the latest before the target)")
    t = r.add_mutually_exclusive_group()
    t.add_argument("--target-time", metavar="T",
                   help="replay up to this time, with a zone: 2026-11-30T12:00:00Z or as psql prints now()")
    t.add_argument("--target-lsn", metavar="LSN", help="replay up to this WAL position (0/3000060)")
    t.add_argument("--target-xid", metavar="XID", help="replay up to this transaction id")
    t.add_argument("--target-name", metavar="NAME", help="replay up to this pg_create_restore_point() name")
    t.add_argument("--target-immediate", action="store_true",
                   help="stop as soon as the backup is consistent (default: replay the whole archive)")


def plan_backup(cluster, args, name, default_source):
    """(backup.store, bootstrap.recovery) of a new cluster from the flags of `up`; checks the
    restore source now (the binary's `config check` judges the rest, e.g. a cluster that would
    archive into its source under the same name)."""
    s3, given = s3_settings(args)
    archive = None
    if not args.no_archive:
        url = store_url(args.archive, "--archive") if args.archive else \
            "file://" + os.path.join(cluster.dir, ARCHIVE_DIR)
        archive = store_spec(url, s3)
        require_s3_keys(archive, "--archive")
    recovery = None
    if args.restore_from:
        url = store_url(args.restore_from, "--restore-from")
        recovery = recovery_spec(url, s3, args.source_cluster, args.backup_id, recovery_target(args),
                                 default_source, "scripts/local-cluster")
        require_s3_keys(recovery["store"], "--restore-from")
        # Archiving into the source under the same name is refused by `config check` (bootstrap.recovery).
    elif args.source_cluster or args.backup_id or any(getattr(args, "target_" + k) for k in TARGET_KINDS):
        raise Failure("--source-cluster, --backup-id and --target-* choose what --restore-from restores",
                      "add --restore-from URL (the source cluster's archive)")
    used = {v["secret"] for spec in (archive, (recovery or {}).get("store")) if spec
            for v in (spec.get("s3") or {}).values() if isinstance(v, dict)}
    cluster.given_secrets = {k: v for k, v in given.items() if k in used}
    return archive, recovery


def refuse_backup_changes(cluster, args):
    """Archive, name and restore source are fixed when a cluster is created."""
    st = cluster.state
    again = f"`{cluster.cmd} down --purge` and `up` again with the new settings (which deletes the data)"
    if args.cluster is not None and args.cluster != st["cluster"]:
        raise Failure(f"the cluster in {cluster.dir} is named {st['cluster']!r}, not {args.cluster!r}", again)
    if args.restore_from:
        raise Failure(f"the cluster in {cluster.dir} exists already; --restore-from only creates a new cluster",
                      f"use another --dir for the restored cluster, or {again}")
    have = (st.get("archive") or {}).get("destination")
    if args.no_archive and have:
        raise Failure(f"the cluster in {cluster.dir} archives to {have}; --no-archive applies to a new cluster",
                      f"remove `backup` from every pg-N/config.yaml and stop/start each, or {again}")
    if args.archive and store_url(args.archive, "--archive") != have:
        raise Failure(f"the cluster in {cluster.dir} archives to {have or 'nowhere (--no-archive)'}, "
                      f"not {args.archive}", f"edit `backup.store` in every pg-N/config.yaml and stop/start each, "
                                             f"or {again}")


def no_archive_why(cluster):
    if "archive" not in cluster.state:
        return "the cluster was created by a local-cluster that did not archive yet"
    return "created with --no-archive"



# --- InstanceConfig sections ----------------------------------------------------------------

def _store(spec, secret_path):
    """A StoreSpec for the InstanceConfig: S3 keys kept in DIR/secrets become their file paths."""
    out = {"destination": spec["destination"]}
    s3 = spec.get("s3")
    if s3:
        s3 = {k: secret_path(v["secret"]) if isinstance(v, dict) else v for k, v in s3.items()}
        out["s3"] = {k: s3[k] for k in S3_FIELDS if s3.get(k)}
    return out


def backup_section(archive, secret_path):
    """The `backup` section (WAL archive and base backups to `archive`), None without one."""
    if not archive:
        return None
    return {"store": _store(archive, secret_path)}


def recovery_section(recovery, secret_path):
    """`bootstrap.recovery` of a cluster restored from a backup, None without one."""
    if not recovery:
        return None
    out = {"store": _store(recovery["store"], secret_path), "sourceCluster": recovery["sourceCluster"]}
    if recovery.get("backupId"):
        out["backupId"] = recovery["backupId"]
    if recovery.get("target"):
        out["target"] = dict(recovery["target"])
    return out


# --- status -----------------------------------------------------------------------------------

def _ago(ts, now):
    try:
        t = datetime.datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return ts
    s = max(0, (now - t).total_seconds())
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def archive_lines(entries, now=None, cluster=None):
    """What `status` says about the WAL archive and base backups, from each instance's /status
    `archive` and `backup` objects: the destination once, one line per running instance, and the
    newest backup. [] when no instance reports an archive."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    docs = [e for e in entries if isinstance(e.get("archive"), dict)]
    if not docs:
        return []
    dests = sorted({d["archive"].get("destination") or "?" for d in docs})
    out = [f"archive: {', '.join(dests)}" + (f" (cluster {cluster})" if cluster else "")]
    for e in docs:
        a = e["archive"]
        if a.get("last_archived_wal"):
            line = (f"last {a['last_archived_wal']} {_ago(a.get('last_archived_at'), now)}, "
                    f"{a.get('archived_total', 0)} archived by this manager")
        else:
            line = "nothing archived by this manager" + (" (a replica archives once it is primary)"
                                                         if e.get("role") == "replica" else "")
        if a.get("backlog"):
            line += f", backlog {a['backlog']} (.ready)"
        elif a.get("last_archived_wal") and a.get("backlog") == 0:
            line += ", no backlog"
        if a.get("failures_total"):
            line += (f", {a['failures_total']} failures, last {a.get('last_failed_wal') or '?'} "
                     f"{_ago(a.get('last_failed_at'), now)}: {a.get('last_failure') or '?'}")
        out.append(f"  {e['name']}: {line}")
    backups = [e["backup"] for e in entries if isinstance(e.get("backup"), dict)]
    last = [b["last_backup"] for b in backups if isinstance(b.get("last_backup"), dict)]
    if last:
        b = max(last, key=lambda x: x.get("stopped_at") or "")
        out.append(f"last backup: {b.get('id')} by {b.get('instance')}, {_ago(b.get('stopped_at'), now)}")
    elif backups:
        # Managers other than the one that took it re-read the catalog only now and then.
        out.append("last backup: none seen by the running managers (`backup list` reads the catalog)")
    for e in entries:
        b = e.get("backup") if isinstance(e.get("backup"), dict) else {}
        if b.get("running"):
            out.append(f"  {e['name']}: taking backup {b['running']}")
        if b.get("last_failure"):
            out.append(f"  {e['name']}: last backup failed {_ago(b.get('last_failed_at'), now)}: {b['last_failure']}")
        if b.get("retention_error"):
            out.append(f"  {e['name']}: retention failed: {b['retention_error']}")
    return out
