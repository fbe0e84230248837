#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Structured shutdown: on SIGTERM the manager stops Postgres, gives its lease up, and then
//! every task it started — the API listeners, the metrics, the HA loop on its own thread, the
//! backup schedule and the archive audit — ends before it exits.

use std::time::Duration;

use instance_manager::testkit::{FAST, TestCluster, TestDir};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_every_task_ends_before_the_manager_exits() {
    let store = TestDir::new();
    let path = store.path().display().to_string();
    let mut cluster = TestCluster::start_with(1, FAST, |o| {
        o.extra_yaml.push_str(&format!("backup:\n  store:\n    destination: file://{path}\n"));
    });
    assert_eq!(cluster.wait_primary(&["pg-1"], Duration::from_secs(120)).await, "pg-1");

    let pg = cluster.get_mut("pg-1");
    pg.signal(Signal::SIGTERM);
    assert_eq!(pg.wait_exit(Duration::from_secs(60)).await, Some(0), "{}", pg.log_tail(30));
    let log = pg.log();
    let ended = log.lines().find(|l| l.contains("every task ended")).unwrap_or_else(|| {
        panic!("no clean end of the tasks logged:\n{}", pg.log_tail(30));
    });
    let line: serde_json::Value = serde_json::from_str(ended).unwrap();
    // wal socket, api, manager socket, metrics, ha loop, backup schedule, archive audit.
    let tasks = line["fields"]["tasks"].as_u64().or_else(|| line["tasks"].as_u64()).unwrap_or(0);
    assert!(tasks >= 7, "only {tasks} tasks were tracked: {ended}");
    assert!(!log.contains("tasks still running at exit"), "{}", pg.log_tail(30));
}
