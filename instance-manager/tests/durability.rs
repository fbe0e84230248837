#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The durability checker: writers record every acknowledged commit; after the primary is
//! lost (kill -9 of its manager and Postgres), in synchronous mode every acknowledged commit
//! is on the new primary, and the new primary is a member of the published synchronous set.

use std::time::Duration;

use instance_manager::api::ReplicationState;
use instance_manager::testkit::{DEFAULTS, FAST, TestCluster, Writer, wait_for};
use nix::sys::signal::Signal;

const BOOT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_mode_loses_no_acknowledged_commit_on_node_loss() {
    let mut cluster = TestCluster::start_with(3, FAST, |o| o.extra_yaml.push_str("synchronous: {number: 1}\n"));
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");
    let published = cluster.wait_sync_published(Duration::from_secs(30)).await;
    assert_eq!(published.len(), 1, "exactly synchronous.number standbys are published");

    let p = cluster.get("pg-1");
    let writers: Vec<Writer> = (0..3)
        .map(|i| Writer::start(p.run_dir(), p.pg_port, &format!("probe{i}"), 1, Duration::from_millis(5)))
        .collect();
    wait_for("commits acknowledged", Duration::from_secs(20), || async {
        let n: usize = writers.iter().map(|w| w.acks().len()).sum();
        if n > 200 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    cluster.get_mut("pg-1").kill_all();
    let mut acked = Vec::new();
    for w in writers {
        acked.push(w.stop().await);
    }

    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    assert!(published.contains(&new), "{new} was promoted but the published set was {published:?}");
    let st = cluster.get(&new).status().await.unwrap();
    let c = cluster.get(&new).connect("postgres").await.unwrap();
    let ssn: String = c.query_one("SHOW synchronous_standby_names", &[]).await.unwrap().get(0);
    assert!(!ssn.is_empty(), "the new primary runs without a synchronous standby");
    for (i, acks) in acked.iter().enumerate() {
        let ids: Vec<i64> =
            c.query(&format!("SELECT id FROM probe{i}"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        let missing: Vec<i64> = acks.iter().map(|a| a.id).filter(|id| !ids.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "probe{i}: {} acknowledged commits lost on {new} (timeline {:?}): {:?}",
            missing.len(),
            st.timeline,
            &missing[..missing.len().min(10)]
        );
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    eprintln!("{total} acknowledged commits, all present on {new}");

    // A second loss right after: the last replica must be promotable although its WAL receiver
    // died with its primary (its timeline is read from what it followed, not its restartpoint).
    let last = if new == "pg-2" { "pg-3" } else { "pg-2" };
    wait_for("the last replica published as synchronous", Duration::from_secs(30), || async {
        match cluster.lease() {
            Some(l) if l.sync_standbys == [last.to_string()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let w =
        Writer::start(cluster.get(&new).run_dir(), cluster.get(&new).pg_port, "probe9", 1, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.get_mut(&new).kill_all();
    let acks = w.stop().await;
    assert!(!acks.is_empty(), "no commit acknowledged before the second loss");
    assert_eq!(cluster.wait_primary(&[last], Duration::from_secs(60)).await, last);
    let c = cluster.get(last).connect("postgres").await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM probe9", &[]).await.unwrap().get(0);
    assert!(n >= acks.len() as i64, "{} acknowledged, {n} present on {last}", acks.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_durability_degrades_to_asynchronous_when_its_standby_is_gone() {
    let mut cluster = TestCluster::start_with(2, FAST, |o| {
        o.extra_yaml.push_str("synchronous: {number: 1, dataDurability: preferred}\n");
    });
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2"], BOOT).await, "pg-1");
    wait_for("pg-2 published as synchronous", Duration::from_secs(30), || async {
        match cluster.lease() {
            Some(l) if l.sync_standbys == ["pg-2".to_string()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let p = cluster.get("pg-1");
    let w = Writer::start(p.run_dir(), p.pg_port, "probe", 1, Duration::from_millis(20));
    cluster.get_mut("pg-2").kill_all();
    let killed = tokio::time::Instant::now();
    // Commits wait for the dead standby, then it is unpublished and commits go on alone.
    wait_for("commits acknowledged again without the standby", Duration::from_secs(30), || async {
        let after = w.acks().iter().filter(|a| a.at > killed + Duration::from_secs(1)).count();
        if after > 5 { Ok(()) } else { Err(format!("{after} commits since")) }
    })
    .await;
    let lease = cluster.lease().unwrap();
    assert!(lease.sync_standbys.is_empty(), "the dead standby is still published: {lease:?}");
    assert!(cluster.get("pg-1").log().contains("synchronous replication degraded"), "the degradation was not logged");
    w.stop().await;
}

/// At the default timings a node loss in synchronous mode leaves the surviving replica
/// following the new timeline through its history file: it never diverged, so it is never
/// rewound (which made the new primary's first commit wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_node_loss_rewinds_no_replica_that_did_not_diverge() {
    let mut cluster = TestCluster::start_with(3, DEFAULTS, |o| o.extra_yaml.push_str("synchronous: {number: 1}\n"));
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");
    cluster.wait_sync_published(Duration::from_secs(30)).await;
    let killed = std::time::Instant::now();
    cluster.get_mut("pg-1").kill_all();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(90)).await;
    let other = if new == "pg-2" { "pg-3" } else { "pg-2" };
    let c = cluster.get(&new).connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE after_failover (id int); INSERT INTO after_failover VALUES (1)").await.unwrap();
    eprintln!("first synchronous commit on {new} {:?} after the node loss", killed.elapsed());
    let st = cluster.get(other).status().await.unwrap();
    assert_eq!((st.role.as_str(), st.timeline), ("replica", Some(2)), "{other} does not follow {new}");
    assert!(
        !cluster.get(other).log().contains("rewinding"),
        "{other} never diverged but was rewound:\n{}",
        cluster.get(other).log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_synchronous_standby_leaves_the_set_first_so_commits_never_wait_for_it() {
    // A rolling update stops each replica in turn. Under `required` durability a published
    // standby that is down makes every commit wait until it is back; a standby stopped with
    // SIGTERM leaves the set first, so commits go on while it is down.
    let mut cluster = TestCluster::start_with(3, FAST, |o| {
        o.extra_yaml.push_str("synchronous: {number: 1}\n");
        o.api_token = true;
    });
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2", "pg-3"], BOOT).await, "pg-1");
    cluster.wait_sync_published(Duration::from_secs(30)).await;
    let p = cluster.get("pg-1");
    let writer = Writer::start(p.run_dir(), p.pg_port, "probe", 1, Duration::from_millis(5));
    for round in 0..2 {
        let stopping = cluster.wait_sync_published(Duration::from_secs(30)).await[0].clone();
        let other = if stopping == "pg-2" { "pg-3" } else { "pg-2" };
        wait_for("pg-1's standbys stream", Duration::from_secs(30), || async {
            let st = cluster.get("pg-1").status().await?;
            let n = st.replication.iter().filter(|r| r.state == ReplicationState::Streaming).count();
            if n == 2 { Ok(()) } else { Err(format!("{n} streaming")) }
        })
        .await;
        cluster.get(&stopping).signal(Signal::SIGTERM);
        let code = cluster.get_mut(&stopping).wait_exit(Duration::from_secs(60)).await;
        assert_eq!(code, Some(0), "{}", cluster.get(&stopping).log_tail(30));
        let log = cluster.get(&stopping).log();
        assert!(
            log.contains("left the synchronous set before stopping"),
            "round {round}:\n{}",
            cluster.get(&stopping).log_tail(30)
        );
        assert_eq!(
            cluster.lease().unwrap().sync_standbys,
            [other.to_string()],
            "round {round}: the other standby took its place"
        );
        // Down, and commits go on (without the leave they wait until it is back).
        let before = writer.acks().len();
        wait_for(&format!("commits while {stopping} is down"), Duration::from_secs(10), || async {
            let n = writer.acks().len();
            if n > before + 20 { Ok(()) } else { Err(format!("{} new commits", n - before)) }
        })
        .await;
        cluster.get_mut(&stopping).spawn();
    }
    let acks = writer.stop().await;
    let longest = acks.windows(2).map(|w| w[1].at.duration_since(w[0].at)).max().unwrap_or_default();
    eprintln!("{} acknowledged commits over two standby stops; longest gap {longest:?}", acks.len());
    let c = cluster.get("pg-1").connect("postgres").await.unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM probe", &[]).await.unwrap().get(0);
    assert!(n >= acks.len() as i64, "{} acknowledged, {n} present", acks.len());
}
