#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The manager in a hardened pod's shape.
//!
//! - **Read-only root filesystem.** The manager runs in a private mount namespace where `/` is
//!   remounted read-only; only the volume that holds the data directory (a PVC in a pod: the
//!   data directory, its bootstrap staging sibling and WAL spool live there), the run directory
//!   (an `emptyDir`) and `/dev/shm` (Postgres' shared memory, a tmpfs in a pod too) are
//!   writable. The manager's log is a file the test opened before the namespace existed, as a
//!   container runtime holds stdout: the manager itself writes nothing but its data and run
//!   directories. A primary bootstraps, takes writes, reloads, survives a Postgres crash and a
//!   manager restart; a replica clones it. Any other write fails with EROFS, which the test
//!   would see as one of those steps failing, and which it looks for in the logs besides.
//! - **Private sockets.** The run directory, `manager.sock`, `wal.sock` and Postgres' socket
//!   are reachable by their owners only: another unprivileged user (`nobody`) cannot connect to
//!   any of them, and Postgres' OS user reaches `wal.sock` and Postgres but not the manager's
//!   control socket.
//!
//! Skipped with a message where mount namespaces cannot be created or `nobody` is missing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, manager_binary, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

/// A wrapper running the manager in a mount namespace of its own where `/` is read-only and
/// only `writable` (each bind-mounted onto itself first, so that it stays a writable mount of
/// its own) can be written. `/dev`, `/dev/shm` and `/proc` are mounts of their own and keep
/// their flags, as in a pod.
fn readonly_root(writable: &[&Path]) -> Vec<String> {
    let mut script = String::from("set -e\n");
    for dir in writable {
        let d = dir.display().to_string();
        assert!(!d.contains('\''), "{d}");
        script.push_str(&format!("mount --bind '{d}' '{d}'\n"));
    }
    script.push_str("mount -o remount,bind,ro /\nexec \"$@\"\n");
    ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", &script, "sh"].map(String::from).to_vec()
}

/// Whether this machine can run the manager under [`readonly_root`]: the wrapper works and a
/// write outside the writable directory fails there.
fn readonly_root_available(root: &Path) -> Result<(), String> {
    let writable = root.join("probe-writable");
    std::fs::create_dir_all(&writable).map_err(|e| e.to_string())?;
    let denied = root.join("probe-denied");
    let check = format!("touch '{}' && ! touch '{}' 2>/dev/null", writable.join("ok").display(), denied.display());
    let mut argv = readonly_root(&[&writable]);
    argv.extend(["sh".into(), "-c".into(), check]);
    let out = Command::new(&argv[0]).args(&argv[1..]).output().map_err(|e| format!("cannot run unshare: {e}"))?;
    let result = if !out.status.success() {
        Err(format!("unshare --mount with a read-only / failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    } else if denied.exists() || !writable.join("ok").exists() {
        Err("the read-only remount had no effect".into())
    } else {
        Ok(())
    };
    let _ = std::fs::remove_dir_all(&writable);
    result
}

/// The flags (`rw`/`ro`) of the mount at `mount_point` as the process `pid` sees it.
fn mount_flags(pid: u32, mount_point: &Path) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let want = mount_point.display().to_string();
    // The last mount at that point is the one on top: the one a path lookup finds.
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(4) != Some(&want.as_str()) {
            return None;
        }
        f.get(5).and_then(|opts| opts.split(',').next()).map(str::to_string)
    })
}

/// The uid of a process.
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// A line of the log that says a write hit a read-only filesystem.
fn erofs_line(log: &str) -> Option<&str> {
    log.lines().find(|l| l.contains("Read-only file system") || l.contains("os error 30") || l.contains("EROFS"))
}

async fn count_rows(inst: &TestInstance) -> Result<i64, String> {
    let c = inst.connect("postgres").await?;
    let row = c.query_one("SELECT count(*) FROM hardening", &[]).await.map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_a_read_only_root_filesystem() {
    let root = TestDir::new();
    if let Err(why) = readonly_root_available(root.path()) {
        eprintln!("SKIP: cannot run the manager with a read-only root filesystem here: {why}");
        return;
    }
    let (mut inst, volume, run) = start_read_only(root.path(), InstanceOptions::primary("pg-1"));
    let dir = inst.dir.clone();

    // Bootstrap (initdb into the staging directory, renamed into place) and primary.
    inst.wait_ready(Duration::from_secs(120)).await;
    let st = inst.status().await.unwrap();
    assert_eq!(st.role, "primary", "{st:?}");
    let manager = inst.manager_pid().unwrap();
    assert_eq!(mount_flags(manager, Path::new("/")).as_deref(), Some("ro"), "/ is read-only for the manager");
    for d in [&volume, &run] {
        assert_eq!(mount_flags(manager, d).as_deref(), Some("rw"), "{} is writable", d.display());
    }
    // Postgres runs as its unprivileged OS user (the test, like a pod without runAsUser, is root).
    let postmaster = inst.postgres_pid().expect("postmaster.pid");
    let postgres_uid = User::from_name("postgres").unwrap().expect("the postgres OS user").uid.as_raw();
    assert_eq!(uid_of(postmaster), Some(postgres_uid), "postgres runs as the postgres user");
    assert_eq!(mount_flags(postmaster, Path::new("/")).as_deref(), Some("ro"), "postgres shares the namespace");

    // Writes.
    let c = inst.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE hardening (id int); INSERT INTO hardening SELECT generate_series(1, 100)")
        .await
        .unwrap();
    drop(c);

    // A replica under a read-only root too: pg_basebackup into its staging directory, its
    // pgpass in its run directory.
    let (replica, replica_volume, _) = start_read_only(root.path(), InstanceOptions::replica_of("pg-2", &inst));
    replica.wait_ready(Duration::from_secs(120)).await;
    wait_for("rows on the replica", Duration::from_secs(30), || async {
        match count_rows(&replica).await? {
            100 => Ok(()),
            n => Err(format!("{n} rows")),
        }
    })
    .await;

    // A configuration reload re-renders pgwarden.conf (in the data directory) and SIGHUPs.
    let original = std::fs::read_to_string(&inst.config_path).unwrap();
    let edited = original.replace("parameters:\n", "parameters:\n    work_mem: \"7MB\"\n");
    assert_ne!(original, edited);
    let tmp = dir.join("config.yaml.new");
    std::fs::write(&tmp, edited).unwrap();
    std::fs::rename(&tmp, &inst.config_path).unwrap();
    wait_for("work_mem reloaded", Duration::from_secs(30), || async {
        let c = inst.connect("postgres").await?;
        let v: String = c.query_one("SHOW work_mem", &[]).await.map_err(|e| e.to_string())?.get(0);
        if v == "7MB" { Ok(()) } else { Err(v) }
    })
    .await;

    // Postgres crashes: the manager restarts it (crash recovery) in place.
    kill(Pid::from_raw(postmaster as i32), Signal::SIGKILL).unwrap();
    wait_for("postgres restarted after a crash", Duration::from_secs(60), || async {
        let st = inst.status().await?;
        if st.postgres.restarts >= 1 && st.postgres.accepting_connections {
            count_rows(&inst).await
        } else {
            Err(format!("{:?}", st.postgres))
        }
    })
    .await;

    // The manager stops cleanly and starts again over the existing data directory.
    inst.signal(Signal::SIGTERM);
    assert_eq!(inst.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", inst.log_tail(20));
    inst.spawn();
    inst.wait_ready(Duration::from_secs(90)).await;
    assert_eq!(inst.status().await.unwrap().role, "primary");
    assert_eq!(count_rows(&inst).await.unwrap(), 100, "every row survived both restarts");
    let manager = inst.manager_pid().unwrap();
    assert_eq!(mount_flags(manager, Path::new("/")).as_deref(), Some("ro"), "the second start is read-only too");

    for (inst, volume) in [(&inst, &volume), (&replica, &replica_volume)] {
        let log = inst.log();
        let erofs = erofs_line(&log);
        assert!(erofs.is_none(), "{}: a write hit the read-only root: {}", inst.name, erofs.unwrap_or(""));
        // The volume holds the data directory and nothing else (no staging directory left).
        let on_volume: Vec<String> =
            std::fs::read_dir(volume).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(on_volume, ["pgdata"], "{}", inst.name);
    }
}

/// Starts `opts` under [`readonly_root`]: its data directory on a volume of its own
/// (`<root>/<name>/volume/pgdata`) and its run directory (`<root>/<name>/run`) writable.
fn start_read_only(root: &Path, mut opts: InstanceOptions) -> (TestInstance, PathBuf, PathBuf) {
    let dir = root.join(&opts.name);
    let (volume, run) = (dir.join("volume"), dir.join("run"));
    for d in [&volume, &run] {
        std::fs::create_dir_all(d).unwrap();
    }
    opts.data_dir = Some(volume.join("pgdata"));
    opts.run_dir = Some(run.clone());
    opts.wrapper = readonly_root(&[&volume, &run]);
    (TestInstance::start(root, &opts), volume, run)
}

/// Runs `program args` as `uid:gid`; its exit status and stderr.
fn run_as(uid: u32, gid: u32, program: &Path, args: &[&str]) -> (bool, String) {
    use std::os::unix::process::CommandExt;
    let out = Command::new(program)
        .args(args)
        .uid(uid)
        .gid(gid) // std drops root's supplementary groups with the uid
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("run {} as {uid}: {e}", program.display()));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn refused(what: &str, (ok, stderr): (bool, String)) {
    assert!(!ok, "{what}: connected, but should be refused");
    assert!(stderr.contains("Permission denied") || stderr.contains("os error 13"), "{what}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sockets_are_reachable_by_their_owners_only() {
    let Some(nobody) = User::from_name("nobody").ok().flatten() else {
        eprintln!("SKIP: no OS user `nobody` to try the sockets as");
        return;
    };
    let postgres = User::from_name("postgres").unwrap().expect("the postgres OS user");
    let root = TestDir::new();
    let inst = TestInstance::start(root.path(), &InstanceOptions::primary("pg-1"));
    inst.wait_ready(Duration::from_secs(90)).await;
    let run = inst.run_dir();
    let pg_socket = run.join(format!(".s.PGSQL.{}", inst.pg_port));
    let (manager_sock, wal_sock) = (run.join("manager.sock"), run.join("wal.sock"));

    // Modes and owners: the manager is root here, Postgres runs as `postgres`.
    let expect = [
        (&run, 0o700, postgres.uid.as_raw()),
        (&pg_socket, 0o700, postgres.uid.as_raw()),
        (&manager_sock, 0o600, 0),
        (&wal_sock, 0o600, postgres.uid.as_raw()),
    ];
    for (path, mode, uid) in expect {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            (meta.permissions().mode() & 0o7777, meta.uid()),
            (mode, uid),
            "mode and owner of {}",
            path.display()
        );
    }

    let psql = Path::new("/usr/lib/postgresql/15/bin/psql");
    let port = inst.pg_port.to_string();
    let run_str = run.display().to_string();
    let psql_args = ["-h", &run_str, "-p", &port, "-U", "postgres", "-d", "postgres", "-X", "-c", "SELECT 1"];
    let client = |sock: &Path| vec!["--api".to_string(), format!("unix://{}", sock.display()), "status".into()];
    let (manager_args, wal_args) = (client(&manager_sock), client(&wal_sock));
    fn as_args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let bin = manager_binary();

    // Another unprivileged user reaches none of them.
    let (u, g) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    refused("nobody → manager.sock", run_as(u, g, &bin, &as_args(&manager_args)));
    refused("nobody → wal.sock", run_as(u, g, &bin, &as_args(&wal_args)));
    refused("nobody → postgres", run_as(u, g, psql, &psql_args));

    // Postgres' OS user reaches Postgres and the WAL socket (which answers /status with 404:
    // it serves the WAL routes only), not the manager's control socket.
    let (u, g) = (postgres.uid.as_raw(), postgres.gid.as_raw());
    let (ok, stderr) = run_as(u, g, psql, &psql_args);
    assert!(ok, "postgres → postgres: {stderr}");
    let (ok, stderr) = run_as(u, g, &bin, &as_args(&wal_args));
    assert!(!ok && stderr.contains("404"), "postgres → wal.sock connects and gets a 404: {stderr}");
    refused("postgres → manager.sock", run_as(u, g, &bin, &as_args(&manager_args)));
}

/// A manager that is not root (a pod's `runAsUser`), with its volumes as Kubernetes mounts
/// them for a pod with `fsGroup`: the roots belong to root and the group, setgid — the run
/// directory an `emptyDir` (2777), the data directory a subdirectory of the data volume's root
/// (2775). Neither root is the manager's to chmod; both just work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_mounted_for_a_non_root_pod_just_work() {
    use std::os::unix::fs::chown;
    let postgres = User::from_name("postgres").unwrap().expect("the postgres OS user");
    let (uid, gid) = (postgres.uid.as_raw(), postgres.gid.as_raw());
    let root = TestDir::new();
    let dir = root.path().join("pg-1");
    let (volume, run, secrets) = (dir.join("volume"), dir.join("run"), root.path().join("secrets"));
    for (d, mode) in [(&volume, 0o2775), (&run, 0o2777)] {
        std::fs::create_dir_all(d).unwrap();
        chown(d, Some(0), Some(gid)).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // The secrets, as a Secret volume with fsGroup: readable by the manager's user.
    std::fs::create_dir_all(&secrets).unwrap();
    for s in ["superuser", "app", "replication", "token"] {
        let file = secrets.join(s);
        std::fs::write(&file, format!("{}\n", instance_manager::testkit::TEST_PASSWORD)).unwrap();
        chown(&file, Some(uid), Some(gid)).unwrap();
    }
    let mut opts = InstanceOptions::primary("pg-1");
    opts.data_dir = Some(volume.join("pgdata"));
    opts.run_dir = Some(run.clone());
    opts.wrapper = ["setpriv", &format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups", "--"]
        .map(String::from)
        .to_vec();
    let inst = TestInstance::start(root.path(), &opts);
    inst.wait_ready(Duration::from_secs(120)).await;
    assert_eq!(uid_of(inst.manager_pid().unwrap()), Some(uid), "the manager runs as {uid}");
    assert_eq!(inst.status().await.unwrap().role, "primary");
    // Over TCP with the password: peer authentication maps the manager's user, not the test's root.
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(inst.pg_port).user("postgres").password(instance_manager::testkit::TEST_PASSWORD);
    let (c, conn) = cfg.dbname("postgres").connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c.batch_execute("CREATE TABLE mounted (id int); INSERT INTO mounted VALUES (1)").await.unwrap();

    // The volumes' roots are as they were mounted; what the manager made in them is private.
    let mode_owner = |p: &Path| {
        let meta = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (meta.permissions().mode() & 0o7777, meta.uid())
    };
    assert_eq!(mode_owner(&run), (0o2777, 0), "the run directory's root is left as mounted");
    assert_eq!(mode_owner(&volume), (0o2775, 0), "the data volume's root is left as mounted");
    assert_eq!(mode_owner(&run.join("manager.sock")), (0o600, uid));
    assert_eq!(mode_owner(&run.join(format!(".s.PGSQL.{}", inst.pg_port))).0 & 0o077, 0, "Postgres' socket");
    assert_eq!(mode_owner(&volume.join("pgdata")), (0o700, uid), "the data directory");
    assert!(inst.log().contains("used as it is"), "the manager says it left the run directory as it is");
}
