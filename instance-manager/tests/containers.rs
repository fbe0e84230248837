#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! HA across containers of the `pgwarden/postgres` image (`images/build`): three containers on
//! a private Docker network, the instance manager PID 1 of each, `--read-only`, `--user 26:26`,
//! `--cap-drop ALL`, volumes mounted as Kubernetes mounts them, the Kubernetes Lease of a test
//! API server on the network's gateway (see `testkit::ContainerCluster` for why not a file).
//! Each test ends with one writer and, in synchronous mode, every acknowledged commit on the
//! primary: node loss (`docker kill`), a stop with a grace period (`docker stop`), a frozen
//! primary (`docker pause`), a primary cut off the network (`docker network disconnect`), and
//! orphans reaped by PID 1.
//!
//! Skipped with a message where no Docker engine answers or the image is not built; `.ci/run`
//! builds it and sets `PGWARDEN_REQUIRE_IMAGES=1`, so that in CI they run or fail.

use std::collections::BTreeSet;
use std::time::Duration;

use instance_manager::testkit::docker::image_or_skip;
use instance_manager::testkit::{Ack, ContainerCluster, FAST, Member, STOP_GRACE, Writer, wait_for};
use tokio::time::Instant;

const BOOT: Duration = Duration::from_secs(180);
const SYNC: &str = "synchronous: {number: 1}\n";
const ALL: [&str; 3] = ["pg-1", "pg-2", "pg-3"];

/// A three-member synchronous cluster with pg-1 primary and its published synchronous standby,
/// or `None` (skipped).
async fn cluster() -> Option<ContainerCluster> {
    let image = image_or_skip()?;
    let cluster = ContainerCluster::start(&image, 3, FAST, SYNC).expect("start the containers");
    // The outer deadline passes first, so that a failure shows the members' logs.
    let first = tokio::time::timeout(BOOT, cluster.wait_primary(&ALL, BOOT + Duration::from_secs(10))).await;
    match first {
        Ok(p) => assert_eq!(p, "pg-1", "{}", cluster.logs()),
        Err(_) => panic!("no primary within {BOOT:?}{}", cluster.logs()),
    }
    wait_for("every member up and the synchronous standby published", BOOT, || async {
        for name in ALL {
            let st = cluster.get(name).status().await?;
            if !st.postgres.accepting_connections {
                return Err(format!("{name}: {}", st.role));
            }
        }
        let st = cluster.get("pg-1").status().await?;
        let sync = st.lease.map(|l| l.sync_standbys).unwrap_or_default();
        if sync.is_empty() { Err("no synchronous standby published".into()) } else { Ok(()) }
    })
    .await;
    Some(cluster)
}

/// [`cluster`] with writers committing on pg-1, a hundred commits acknowledged.
async fn writing_cluster() -> Option<(ContainerCluster, Vec<Writer>)> {
    let cluster = cluster().await?;
    let ws = writers(cluster.get("pg-1"), 1);
    wait_acks(&ws, 100).await;
    Some((cluster, ws))
}

/// Each writer's acknowledgements, followed by those of its successor on the new primary.
fn joined(mut first: Vec<Vec<Ack>>, then: Vec<Vec<Ack>>) -> Vec<Vec<Ack>> {
    for (mine, later) in first.iter_mut().zip(then) {
        mine.extend(later);
    }
    first
}

/// Writers committing rows `first..` on `member` as fast as they can (tables `probe0`, `probe1`).
fn writers(member: &Member, first: i64) -> Vec<Writer> {
    (0..2)
        .map(|i| Writer::start_tcp(member.ip, member.pg_port(), &format!("probe{i}"), first, Duration::from_millis(5)))
        .collect()
}

/// The first row id of writers started after a change of primary.
const LATER: i64 = 1_000_000;

async fn wait_acks(ws: &[Writer], at_least: usize) {
    wait_for("commits acknowledged", Duration::from_secs(30), || async {
        let n: usize = ws.iter().map(|w| w.acks().len()).sum();
        if n >= at_least { Ok(()) } else { Err(format!("{n} acknowledged")) }
    })
    .await;
}

async fn stop(ws: Vec<Writer>) -> Vec<Vec<Ack>> {
    let mut all = Vec::new();
    for w in ws {
        all.push(w.stop().await);
    }
    all
}

/// Every acknowledged row of every writer is on `member`.
async fn assert_none_lost(member: &Member, acked: &[Vec<Ack>]) {
    let c = member.connect().await.unwrap();
    for (i, acks) in acked.iter().enumerate() {
        let rows = c.query(&format!("SELECT id FROM probe{i}"), &[]).await.unwrap();
        let present: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        let lost: Vec<i64> = acks.iter().map(|a| a.id).filter(|id| !present.contains(id)).collect();
        assert!(lost.is_empty(), "probe{i}: {} acknowledged commits lost on {}: {lost:?}", lost.len(), member.name);
    }
}

/// The longest pause between two acknowledgements of any writer (the write gap).
fn longest_gap(acked: &[Vec<Ack>]) -> Duration {
    let mut at: Vec<Instant> = acked.iter().flatten().map(|a| a.at).collect();
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Exactly one member is primary and the others stream from it.
async fn assert_one_primary_and_streaming(cluster: &ContainerCluster, primary: &str) {
    wait_for("the others streaming from the primary", Duration::from_secs(120), || async {
        for name in ALL.iter().filter(|n| **n != primary) {
            let st = cluster.get(name).status().await?;
            let streaming = st.wal_receiver.as_ref().is_some_and(|w| w.status.as_str() == "streaming");
            if st.role != "replica" || !streaming {
                return Err(format!("{name}: {} (receiver {:?})", st.role, st.wal_receiver.map(|w| w.status)));
            }
        }
        Ok(())
    })
    .await;
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(10)).await, primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_loss_fails_over_and_the_old_primary_rejoins() {
    let Some((cluster, ws)) = writing_cluster().await else { return };

    // Node loss: every process of the container gets SIGKILL at once.
    cluster.get("pg-1").container.act("kill").unwrap();
    let killed = Instant::now();
    let acked = stop(ws).await;
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    eprintln!("new primary {new} {:?} after docker kill", killed.elapsed());
    assert_none_lost(cluster.get(&new), &acked).await;

    // The old primary's container starts again: it follows the new primary.
    cluster.get("pg-1").container.act("start").unwrap();
    assert_one_primary_and_streaming(&cluster, &new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_hands_over_before_the_primary_exits() {
    let Some((cluster, ws)) = writing_cluster().await else { return };

    let took = cluster.get("pg-1").container.stop(STOP_GRACE).unwrap();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(30)).await;
    // The writers follow the new primary for a while.
    let old: Vec<Ack> = ws.iter().flat_map(|w| w.acks()).collect();
    let (ws2, acked_before) = (writers(cluster.get(&new), LATER), old.len());
    wait_acks(&ws2, 100).await;
    let acked = joined(stop(ws).await, stop(ws2).await);
    assert_eq!(cluster.get("pg-1").container.exit_code().unwrap(), 0, "{}", cluster.logs());
    let t = cluster.get(&new).status().await.unwrap().lease.and_then(|l| l.last_transition).expect("a transition");
    assert_eq!((t.kind.as_str(), t.from.as_deref()), ("switchover", Some("pg-1")), "handed over, not failed over");
    assert!(took < Duration::from_secs(STOP_GRACE), "docker stop took {took:?}: the grace period ran out");
    eprintln!(
        "docker stop of the primary: exited 0 after {took:?} (grace {STOP_GRACE} s), {acked_before} commits before"
    );
    assert_none_lost(cluster.get(&new), &acked).await;
    eprintln!("longest pause between acknowledged commits across the switchover: {:?}", longest_gap(&acked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_never_accepts_a_write_after_waking() {
    let Some((cluster, ws)) = writing_cluster().await else { return };

    // Frozen (every process of the container) for twice the lease duration.
    cluster.get("pg-1").container.act("pause").unwrap();
    let paused = Instant::now();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    let ws2 = writers(cluster.get(&new), LATER);
    wait_acks(&ws2, 50).await;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed())).await;
    cluster.get("pg-1").container.act("unpause").unwrap();
    let woke = Instant::now();

    // Awake, the old primary's writers keep trying. A commit it acknowledged after waking would
    // be a second writer: missing on the new primary (a commit that waited through the freeze
    // for its synchronous standby, and was released by that standby's answer, is there).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let old = stop(ws).await;
    let after_wake: usize = old.iter().map(|acks| acks.iter().filter(|a| a.at >= woke).count()).sum();
    eprintln!("pg-1 acknowledged {after_wake} commits after it woke up");
    let acked = joined(old, stop(ws2).await);
    assert_none_lost(cluster.get(&new), &acked).await;
    assert_one_primary_and_streaming(&cluster, &new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_primary_fences_and_rejoins_by_rewind() {
    let Some((cluster, ws)) = writing_cluster().await else { return };

    let net = cluster.network.name.clone();
    let (pg1, ip) = (cluster.get("pg-1").container.name.clone(), cluster.get("pg-1").ip.to_string());
    instance_manager::testkit::docker::dk(&["network", "disconnect", &net, &pg1]).unwrap();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    let acked = stop(ws).await;
    assert_none_lost(cluster.get(&new), &acked).await;
    // Cut off, pg-1 cannot renew: it stops Postgres (it cannot be asked over the network, but
    // its log can).
    wait_for("pg-1 fenced", Duration::from_secs(30), || async {
        let log = cluster.get("pg-1").container.logs();
        if log.contains("no successful lease renew") { Ok(()) } else { Err("not fenced yet".to_string()) }
    })
    .await;

    instance_manager::testkit::docker::dk(&["network", "connect", "--ip", &ip, &net, &pg1]).unwrap();
    assert_one_primary_and_streaming(&cluster, &new).await;
    assert!(cluster.get("pg-1").container.logs().contains("rewinding"), "pg-1 rejoined without a rewind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_1_reaps_what_postgres_leaves_behind() {
    let Some(cluster) = cluster().await else { return };
    let p = cluster.get("pg-1");
    // Many client connections, then the postmaster dies: its backends are orphans of PID 1.
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(p.connect().await.unwrap());
    }
    let pid = p.container.exec(&["sh", "-c", "head -1 /var/lib/postgresql/data/pgdata/postmaster.pid"]).unwrap();
    p.container.exec(&["sh", "-c", &format!("kill -9 {pid}")]).unwrap();
    drop(clients);
    wait_for("postgres back after the crash, no zombie in the container", Duration::from_secs(60), || async {
        let st = p.status().await?;
        if !(st.postgres.accepting_connections && st.postgres.restarts >= 1) {
            return Err(format!("{:?}", st.postgres));
        }
        let procs = p.container.processes()?;
        let zombies: Vec<_> = procs.iter().filter(|(_, stat, _)| stat.starts_with('Z')).collect();
        if zombies.is_empty() { Ok(()) } else { Err(format!("zombies: {zombies:?}")) }
    })
    .await;
    // The manager is PID 1 of the container.
    let pid1 = p.container.exec(&["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"]).unwrap();
    assert!(pid1.starts_with("/usr/local/bin/instance-manager run"), "PID 1 is {pid1:?}");
}
