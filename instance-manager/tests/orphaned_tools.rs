#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! No tool outlives its manager: a replica's clone (`pg_basebackup`, whose forked WAL
//! streamer holds a temporary slot on the primary) is gone with its slot when the manager
//! stops on SIGTERM or dies by SIGKILL, and the next start succeeds, also when the guard
//! process was killed with the manager.
//!
//! The clone is slowed down with a `binDir` whose `pg_basebackup` is the real one with
//! `--max-rate=32k`, so it is reliably still running when the signal comes.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A bin directory of links to the real tools, with a throttled `pg_basebackup`.
fn slow_bin_dir(root: &Path) -> PathBuf {
    let dir = root.join("slow-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(PG_BIN).unwrap().flatten() {
        if entry.file_name() != "pg_basebackup" {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let script = dir.join("pg_basebackup");
    std::fs::write(&script, format!("#!/bin/sh\nexec {PG_BIN}/pg_basebackup --max-rate=32k \"$@\"\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Pids of processes with an argument under `dir`, and their command names.
fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let dir = dir.as_os_str().as_bytes();
    let under = |arg: &[u8]| arg.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest[0] == b'/');
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.split(|&b| b == 0).any(under)))
        .map(|pid| (pid, std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()))
        .collect()
}

fn basebackups_under(dir: &Path) -> Vec<(i32, String)> {
    processes_under(dir).into_iter().filter(|(_, comm)| comm == "pg_basebackup").collect()
}

async fn basebackup_slots(primary: &TestInstance) -> Result<Vec<String>, String> {
    let c = primary.connect("postgres").await?;
    let rows = c
        .query("SELECT slot_name::text FROM pg_replication_slots WHERE slot_name LIKE 'pg_basebackup_%'", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A primary, and a replica whose manager is in the middle of a (throttled) clone of it.
async fn cloning(root: &Path) -> (TestInstance, TestInstance) {
    let primary = TestInstance::start(root, &InstanceOptions::primary("pg-1"));
    primary.wait_ready(Duration::from_secs(90)).await;
    let mut opts = InstanceOptions::replica_of("pg-2", &primary);
    opts.extra_yaml = format!("binDir: {}\n", slow_bin_dir(root).display());
    let replica = TestInstance::start(root, &opts);
    wait_for("the clone to be streaming WAL", Duration::from_secs(60), || async {
        let slots = basebackup_slots(&primary).await?;
        let tools = basebackups_under(&replica.dir);
        // The forked WAL streamer and its parent.
        if !slots.is_empty() && tools.len() >= 2 { Ok(()) } else { Err(format!("slots {slots:?}, tools {tools:?}")) }
    })
    .await;
    (primary, replica)
}

/// Nothing of the clone is left: no pg_basebackup process, no slot on the primary.
async fn clone_gone(primary: &TestInstance, replica: &TestInstance, within: Duration) {
    wait_for("pg_basebackup and its slot to be gone", within, || async {
        let tools = basebackups_under(&replica.dir);
        let slots = basebackup_slots(primary).await?;
        if tools.is_empty() && slots.is_empty() { Ok(()) } else { Err(format!("tools {tools:?}, slots {slots:?}")) }
    })
    .await;
}

/// Starts the replica again with the real tools and waits until it serves.
async fn restart_unthrottled(replica: &mut TestInstance) {
    let config = std::fs::read_to_string(&replica.config_path).unwrap();
    let config: String = config.lines().filter(|l| !l.starts_with("binDir:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&replica.config_path, config).unwrap();
    replica.spawn();
    replica.wait_ready(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_clone_stops_it_and_exits_non_zero() {
    let root = TestDir::new();
    let (primary, mut replica) = cloning(root.path()).await;
    replica.signal(Signal::SIGTERM);
    let code = replica.wait_exit(Duration::from_secs(30)).await;
    assert!(matches!(code, Some(c) if c != 0), "the replica was not created: exit {code:?}\n{}", replica.log_tail(20));
    clone_gone(&primary, &replica, Duration::from_secs(10)).await;
    restart_unthrottled(&mut replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_manager_during_a_clone_takes_the_clone_along() {
    let root = TestDir::new();
    let (primary, mut replica) = cloning(root.path()).await;
    replica.signal(Signal::SIGKILL);
    replica.wait_exit(Duration::from_secs(10)).await;
    clone_gone(&primary, &replica, Duration::from_secs(10)).await;
    restart_unthrottled(&mut replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_start_stops_a_clone_that_outlived_manager_and_guard() {
    let root = TestDir::new();
    let (primary, mut replica) = cloning(root.path()).await;
    let manager = replica.manager_pid().expect("manager pid") as i32;
    let guard = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok());
            cmdline.split(|&b| b == 0).any(|a| a == b"child-guard") && ppid == Some(manager)
        })
        .expect("the manager's child guard");
    // Both at once, as a `kill -9` of the whole process tree would.
    let _ = kill(Pid::from_raw(guard), Signal::SIGKILL);
    replica.signal(Signal::SIGKILL);
    replica.wait_exit(Duration::from_secs(10)).await;
    assert!(!basebackups_under(&replica.dir).is_empty(), "the clone outlived both (the case under test)");
    restart_unthrottled(&mut replica).await;
    clone_gone(&primary, &replica, Duration::from_secs(10)).await;
    assert!(
        replica.log().contains("killing a tool a previous run of the manager left running"),
        "{}",
        replica.log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_initdb_exits_non_zero_and_leaves_nothing_running() {
    let root = TestDir::new();
    // An initdb that takes its time before doing the real work.
    let bin = root.path().join("slow-initdb");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir(PG_BIN).unwrap().flatten() {
        if entry.file_name() != "initdb" {
            std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name())).unwrap();
        }
    }
    let script = bin.join("initdb");
    std::fs::write(&script, format!("#!/bin/sh\nsleep 60\nexec {PG_BIN}/initdb \"$@\"\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut opts = InstanceOptions::primary("pg-1");
    opts.extra_yaml = format!("binDir: {}\n", bin.display());
    let mut inst = TestInstance::start(root.path(), &opts);
    wait_for("initdb to run", Duration::from_secs(30), || async {
        let running = processes_under(&inst.dir);
        if running.iter().any(|(_, comm)| comm == "initdb") { Ok(()) } else { Err(format!("{running:?}")) }
    })
    .await;
    inst.signal(Signal::SIGTERM);
    let code = inst.wait_exit(Duration::from_secs(30)).await;
    assert!(matches!(code, Some(c) if c != 0), "the instance was not created: exit {code:?}\n{}", inst.log_tail(20));
    assert!(inst.log().contains("stopped before the data directory was created"), "{}", inst.log_tail(20));
    wait_for("initdb to be gone", Duration::from_secs(10), || async {
        let left = processes_under(&inst.dir);
        if left.is_empty() { Ok(()) } else { Err(format!("{left:?}")) }
    })
    .await;
    assert!(!inst.data_dir().join("PG_VERSION").exists(), "no half-made data directory");
}
