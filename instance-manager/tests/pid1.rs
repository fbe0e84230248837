#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The manager as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`), as in a
//! pod: it supervises Postgres, reaps the orphans of a crashed postmaster, and stops cleanly on
//! SIGTERM. Skipped with a message where PID namespaces cannot be created.

use std::time::Duration;

use instance_manager::testkit::{InstanceOptions, TestDir, TestInstance, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_as_pid_1_supervises_reaps_and_stops_cleanly() {
    let probe = std::process::Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: cannot create a PID namespace here (unshare --pid --fork --mount-proc failed)");
        return;
    }
    let root = TestDir::new();
    let mut opts = InstanceOptions::primary("pg-1");
    opts.wrapper = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"].map(String::from).to_vec();
    let mut inst = TestInstance::start(root.path(), &opts);
    inst.wait_ready(Duration::from_secs(90)).await;
    let st = inst.status().await.unwrap();
    assert_eq!(st.manager_pid, 1, "the manager is PID 1 of its namespace");

    // Host view: unshare → manager → postgres → backends.
    let unshare = inst.manager_pid().unwrap();
    let manager = *children(unshare).first().expect("the manager under unshare");
    let postmaster =
        children(manager).into_iter().find(|p| comm(*p) == "postgres").expect("postgres under the manager");
    kill(Pid::from_raw(postmaster as i32), Signal::SIGKILL).unwrap();
    wait_for("postgres restarted under PID 1", Duration::from_secs(60), || async {
        let st = inst.status().await?;
        if st.postgres.restarts == 1 && st.postgres.accepting_connections {
            Ok(())
        } else {
            Err(format!("{:?}", st.postgres))
        }
    })
    .await;
    // The dead postmaster's children were re-parented to PID 1 and reaped: no zombies remain.
    wait_for("no zombies under PID 1", Duration::from_secs(20), || async {
        let zombies: Vec<u32> = children(manager).into_iter().filter(|p| state(*p) == Some('Z')).collect();
        if zombies.is_empty() { Ok(()) } else { Err(format!("{zombies:?}")) }
    })
    .await;
    assert!(inst.log().contains("reaped an orphaned process"));

    kill(Pid::from_raw(manager as i32), Signal::SIGTERM).unwrap();
    let code = inst.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "{}", inst.log_tail(20));
}
