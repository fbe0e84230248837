#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Leader election for real: three instance managers and a file lease. The bootstrap member
//! becomes primary; when its manager and Postgres are killed the best replica takes over on a
//! new timeline, the other follows it, and the old primary rejoins as a replica (rewound).

use std::time::Duration;

use instance_manager::testkit::{FAST, TestCluster, TestInstance, wait_for};

const BOOT: Duration = Duration::from_secs(120);

async fn count(inst: &TestInstance) -> Result<i64, String> {
    let c = inst.connect("app").await?;
    c.query_one("SELECT count(*) FROM t", &[]).await.map(|r| r.get(0)).map_err(|e| e.to_string())
}

async fn wait_rows(inst: &TestInstance, n: i64) {
    wait_for(&format!("{n} rows on {}", inst.name), Duration::from_secs(60), || async {
        let got = count(inst).await?;
        if got == n { Ok(()) } else { Err(format!("{got} rows")) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_fails_over_and_the_old_primary_rejoins() {
    let mut cluster = TestCluster::start(3, FAST);
    let all = ["pg-1", "pg-2", "pg-3"];
    let first = cluster.wait_primary(&all, BOOT).await;
    assert_eq!(first, "pg-1", "the bootstrap member creates the cluster");
    let lease = cluster.lease().expect("lease file");
    assert_eq!((lease.holder.as_deref(), lease.transitions), (Some("pg-1"), 1));

    let p = cluster.get("pg-1");
    p.connect("app")
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    wait_rows(cluster.get("pg-2"), 10).await;
    wait_rows(cluster.get("pg-3"), 10).await;

    // Node loss: the manager and every Postgres process of the primary die at once.
    cluster.get_mut("pg-1").kill_all();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    let lease = cluster.lease().expect("lease file");
    assert_eq!(lease.holder.as_deref(), Some(new.as_str()));
    assert_eq!(lease.transitions, 2, "one change of holder, one term");
    let st = wait_for("the failover reported in /status", Duration::from_secs(10), || async {
        let st = cluster.get(&new).status().await?;
        match st.lease.as_ref().and_then(|l| l.last_transition.clone()) {
            Some(_) => Ok(st),
            None => Err(format!("{:?}", st.lease)),
        }
    })
    .await;
    assert_eq!(st.timeline, Some(2), "promotion starts a new timeline");
    let t = st.lease.as_ref().and_then(|l| l.last_transition.clone()).expect("the failover is reported");
    assert_eq!((t.kind.as_str(), t.from.as_deref(), t.term), ("failover", Some("pg-1"), 2));

    // Writes go to the new primary and reach the other replica, which now follows it.
    cluster
        .get(&new)
        .connect("app")
        .await
        .unwrap()
        .batch_execute("INSERT INTO t SELECT generate_series(11, 20)")
        .await
        .unwrap();
    let other = if new == "pg-2" { "pg-3" } else { "pg-2" };
    wait_rows(cluster.get(other), 20).await;

    // The old primary comes back: it must not become writable, it rejoins as a replica.
    cluster.get_mut("pg-1").spawn();
    let again = cluster.wait_primary(&all, Duration::from_secs(90)).await;
    assert_eq!(again, new, "the returning instance does not take over");
    wait_rows(cluster.get("pg-1"), 20).await;
    let st = cluster.get("pg-1").status().await.unwrap();
    assert_eq!((st.role.as_str(), st.timeline), ("replica", Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_on_the_primary_recovers_in_place_without_failover() {
    let cluster = TestCluster::start(3, FAST);
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().expect("postmaster pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pg as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The manager restarts Postgres at once in the same role while it keeps renewing.
    let again = cluster.wait_primary(&all, Duration::from_secs(30)).await;
    assert_eq!(again, "pg-1");
    let lease = cluster.lease().unwrap();
    assert_eq!((lease.holder.as_deref(), lease.transitions), (Some("pg-1"), 1), "no change of term");
    let st = cluster.get("pg-1").status().await.unwrap();
    assert_eq!((st.postgres.restarts, st.timeline), (1, Some(1)));
}
