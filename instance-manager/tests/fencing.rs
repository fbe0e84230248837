#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! One writer at a time: a primary that loses its lease stops accepting writes before anyone
//! else may take the lease — when its lease store hangs, and when its manager is frozen.

use std::time::Duration;

use instance_manager::testkit::{FAST, TestCluster, Writer, pid_alive, wait_for};
use nix::sys::signal::Signal;

const BOOT: Duration = Duration::from_secs(120);

/// Starts a writer on every instance (only the primary will succeed).
fn writers(cluster: &TestCluster) -> Vec<(String, Writer)> {
    cluster
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let w = Writer::start(
                inst.run_dir(),
                inst.pg_port,
                "probe",
                (i as i64 + 1) * 1_000_000,
                Duration::from_millis(20),
            );
            (inst.name.clone(), w)
        })
        .collect()
}

/// Stops the writers and checks that the old primary's last acknowledged commit came before
/// the new primary's first one: never two writers at once.
async fn assert_one_writer_at_a_time(ws: Vec<(String, Writer)>, old: &str, new: &str) {
    let mut by_name = std::collections::BTreeMap::new();
    for (name, w) in ws {
        by_name.insert(name, w.stop().await);
    }
    let last_old = by_name[old].last().map(|a| a.at).expect("the old primary acknowledged writes before the fault");
    let first_new = by_name[new].first().map(|a| a.at).expect("the new primary acknowledged writes");
    assert!(
        last_old < first_new,
        "the old primary acknowledged a write {:?} after the new primary's first",
        last_old - first_new
    );
    for (name, acks) in &by_name {
        if name != old && name != new {
            assert!(acks.is_empty(), "{name} never was primary but acknowledged {} writes", acks.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_fences_when_its_lease_store_hangs() {
    let cluster = TestCluster::start(3, FAST);
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");
    let ws = writers(&cluster);
    wait_for("writes acknowledged on pg-1", Duration::from_secs(10), || async {
        if ws[0].1.acks().len() > 5 { Ok(()) } else { Err("too few".into()) }
    })
    .await;

    // Only pg-1's lease store hangs: it can neither renew nor learn who holds the lease.
    cluster.set_fault("pg-1", Some(r#"{"fault":"hang"}"#));
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(30)).await;
    let log = cluster.get("pg-1").log();
    assert!(log.contains("no successful lease renew"), "pg-1 did not fence for the renew deadline");
    assert_one_writer_at_a_time(ws, "pg-1", &new).await;

    // When its store answers again, pg-1 follows the new primary.
    cluster.set_fault("pg-1", None);
    wait_for("pg-1 replica of the new primary", Duration::from_secs(60), || async {
        let st = cluster.get("pg-1").status().await?;
        if st.role == "replica" && st.timeline == Some(2) {
            Ok(())
        } else {
            Err(format!("{} tl {:?}", st.role, st.timeline))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_manager_is_backstopped_and_never_writes_after_waking() {
    let cluster = TestCluster::start(3, FAST);
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().expect("postmaster pid");
    let ws = writers(&cluster);
    wait_for("writes acknowledged on pg-1", Duration::from_secs(10), || async {
        if ws[0].1.acks().len() > 5 { Ok(()) } else { Err("too few".into()) }
    })
    .await;

    // Freeze the manager for longer than the lease: the deadman must kill Postgres.
    cluster.get("pg-1").signal(Signal::SIGSTOP);
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(30)).await;
    assert!(!pid_alive(pg), "the deadman did not kill the frozen primary's postgres");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.get("pg-1").signal(Signal::SIGCONT);
    // After waking it must not write; it becomes a replica of the new primary.
    wait_for("pg-1 rejoins as a replica", Duration::from_secs(60), || async {
        let st = cluster.get("pg-1").status().await?;
        if st.role == "replica" && st.timeline == Some(2) {
            Ok(())
        } else {
            Err(format!("{} tl {:?}", st.role, st.timeline))
        }
    })
    .await;
    assert!(cluster.get("pg-1").log().contains("\"logger\":\"deadman\""), "the deadman's kill was not logged");
    assert_one_writer_at_a_time(ws, "pg-1", &new).await;
}
