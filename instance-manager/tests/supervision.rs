#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! PID-1 behaviour for real: a crashed postmaster is restarted and reported, its orphaned
//! children are reaped, SIGTERM stops Postgres cleanly (escalating when it must), and the exit
//! code says whether the stop was clean.

use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, pid_alive, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const READY: Duration = Duration::from_secs(90);

fn zombie_children(parent: u32) -> Vec<u32> {
    let mut z = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(after) = stat.rsplit_once(") ").map(|(_, a)| a) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok()));
        if state == Some("Z") && ppid == Some(parent) {
            z.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    z
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_postmaster_is_restarted_and_orphans_reaped() {
    let root = TestDir::new();
    let inst = TestInstance::start(root.path(), &InstanceOptions::primary("pg-1"));
    inst.wait_ready(READY).await;
    let first = inst.status().await.expect("status").postgres.pid.expect("postgres pid");
    // Hold a session so there is a backend to orphan.
    let _session = inst.connect("postgres").await.expect("connect");

    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill -9 the postmaster");

    let st = wait_for("postgres restarted", Duration::from_secs(60), || async {
        let st = inst.status().await?;
        match (st.postgres.pid, st.postgres.accepting_connections) {
            (Some(pid), true) if pid != first => Ok(st),
            _ => Err(format!("{:?}", st.postgres)),
        }
    })
    .await;
    assert_eq!(st.postgres.restarts, 1);
    assert_eq!(st.postgres.last_exit.as_deref(), Some("killed by SIGKILL"));
    assert_eq!(st.role, "primary");
    let log = inst.log();
    assert!(log.contains("postgres exited unexpectedly"), "crash not logged");
    // The dead postmaster's children were re-parented to the manager (a subreaper) and reaped.
    wait_for("orphans reaped", Duration::from_secs(20), || async {
        let log = inst.log();
        let zombies = zombie_children(inst.manager_pid().unwrap_or(0));
        if log.contains("reaped an orphaned process") && zombies.is_empty() {
            Ok(())
        } else {
            Err(format!("zombies {zombies:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_sessions_then_escalates_to_fast_and_exits_0() {
    let root = TestDir::new();
    let mut opts = InstanceOptions::primary("pg-1");
    opts.smart_timeout = 2;
    opts.stop_timeout = 20;
    let mut inst = TestInstance::start(root.path(), &opts);
    inst.wait_ready(READY).await;
    let pg = inst.postgres_pid().expect("postmaster.pid");
    // An open session keeps a smart shutdown waiting until it escalates to fast.
    let session = inst.connect("postgres").await.expect("connect");
    let started = std::time::Instant::now();
    inst.signal(Signal::SIGTERM);
    let code = inst.wait_exit(Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(code, Some(0), "a fast shutdown is clean; log:\n{}", inst.log_tail(30));
    assert!(took >= Duration::from_secs(2), "smart shutdown should have waited for the session ({took:?})");
    assert!(inst.log().contains("escalating the shutdown"), "escalation not logged");
    assert!(!pid_alive(pg), "postgres still running after the manager exited");
    assert!(session.simple_query("SELECT 1").await.is_err(), "the session should be gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_postmaster_is_killed_and_exit_code_says_unclean() {
    let root = TestDir::new();
    let mut opts = InstanceOptions::primary("pg-1");
    opts.smart_timeout = 1;
    opts.stop_timeout = 2;
    let mut inst = TestInstance::start(root.path(), &opts);
    inst.wait_ready(READY).await;
    let pg = inst.postgres_pid().expect("postmaster.pid");
    // A stopped postmaster ignores every shutdown request until SIGKILL.
    kill(Pid::from_raw(pg as i32), Signal::SIGSTOP).expect("SIGSTOP postgres");
    inst.signal(Signal::SIGTERM);
    let code = inst.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(1), "log:\n{}", inst.log_tail(30));
    let log = inst.log();
    for mode in ["Fast", "Immediate", "Kill"] {
        assert!(log.contains(&format!("\"mode\":\"{mode}\"")), "no escalation to {mode} in the log");
    }
    assert!(!pid_alive(pg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_is_json_and_postgres_lines_are_tagged() {
    let root = TestDir::new();
    let mut inst = TestInstance::start(root.path(), &InstanceOptions::primary("pg-1"));
    inst.wait_ready(READY).await;
    let c = inst.connect("postgres").await.expect("connect");
    let _ = c.batch_execute("SELECT pgwarden_no_such_function()").await;
    inst.signal(Signal::SIGINT);
    assert_eq!(inst.wait_exit(Duration::from_secs(60)).await, Some(0));
    let log = inst.log();
    let mut postgres_lines = 0;
    let mut saw_error = false;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "missing level/timestamp: {line}");
        if v["logger"] == "postgres" {
            postgres_lines += 1;
            saw_error |=
                v["pg_level"] == "ERROR" && v["message"].as_str().unwrap_or("").contains("pgwarden_no_such_function");
        }
    }
    assert!(postgres_lines > 3, "too few postgres lines: {postgres_lines}");
    assert!(saw_error, "the failed query's ERROR line was not captured");
    assert!(log.contains("\"logger\":\"initdb\""), "initdb output not captured");
}
