#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Membership changes without restarts (docs/architecture.md §4.8), with real Postgres: the
//! configuration files are rewritten the way the operator rewrites its ConfigMap, and the
//! running managers apply the new `members` without restarting themselves or Postgres.
//!
//! - an instance added to a cluster streams, and everyone lists it, nobody restarted;
//! - the same in synchronous mode, with the durability probe across a failover after it;
//! - a published synchronous standby removed: it leaves the set, commits go on;
//! - a removed member that keeps running is never promoted, however good a candidate;
//! - a primary left out of `members` keeps the lease until it is switched over;
//! - during a lease-store outage (failsafe), a member added is required at once, and a member
//!   removed is still required until the store answers.

use std::collections::BTreeMap;
use std::time::Duration;

use instance_manager::api::WalReceiverStatus;
use instance_manager::testkit::{Ack, FAST, InstanceOptions, TestCluster, TestInstance, Writer, pid_alive, wait_for};

const BOOT: Duration = Duration::from_secs(120);
const SYNC: &str = "synchronous: {number: 1}\n";

fn sync(o: &mut InstanceOptions) {
    o.extra_yaml.push_str(SYNC);
}

/// The manager's and the postmaster's pids of each of `names`.
fn pids(cluster: &TestCluster, names: &[&str]) -> BTreeMap<String, (Option<u32>, Option<u32>)> {
    names.iter().map(|n| (n.to_string(), (cluster.get(n).manager_pid(), cluster.get(n).postgres_pid()))).collect()
}

fn assert_not_restarted(cluster: &TestCluster, before: &BTreeMap<String, (Option<u32>, Option<u32>)>) {
    let names: Vec<&str> = before.keys().map(String::as_str).collect();
    assert_eq!(&pids(cluster, &names), before, "(manager, postmaster) pids changed: something restarted");
}

/// Waits until the `/status` of each of `instances` lists exactly `members`.
async fn wait_members(cluster: &TestCluster, instances: &[&str], members: &[&str]) {
    for name in instances {
        wait_for(&format!("{name} to list the members {members:?}"), Duration::from_secs(30), || async {
            let st = cluster.get(name).status().await?;
            let seen = st.lease.and_then(|l| l.membership).map(|m| m.members).unwrap_or_default();
            if seen == members { Ok(()) } else { Err(format!("{seen:?}")) }
        })
        .await;
    }
}

/// Waits until `replica` streams from the primary, as both of them say.
async fn wait_streaming(primary: &TestInstance, replica: &TestInstance) {
    wait_for(&format!("{} streaming from {}", replica.name, primary.name), BOOT, || async {
        let r = replica.status().await?;
        let receiving = r.wal_receiver.as_ref().is_some_and(|w| w.status == WalReceiverStatus::Streaming);
        let p = primary.status().await?;
        let sending = p.replication.iter().any(|s| s.name == replica.name);
        if receiving && sending { Ok(()) } else { Err(format!("receiver {:?}, sender {sending}", r.wal_receiver)) }
    })
    .await;
}

/// Waits until `writer` had `n` commits acknowledged after `since` acknowledgements.
async fn wait_commits(writer: &Writer, since: usize, n: usize) {
    wait_for("commits acknowledged", Duration::from_secs(30), || async {
        let acked = writer.acks().len().saturating_sub(since);
        if acked >= n { Ok(()) } else { Err(format!("{acked} commits acknowledged")) }
    })
    .await;
}

/// Checks that every commit of `acks` (table `probe{i}`) is on `inst`.
async fn assert_all_present(inst: &TestInstance, acks: &[Vec<Ack>]) {
    let c = inst.connect("postgres").await.unwrap();
    for (i, acks) in acks.iter().enumerate() {
        let ids: Vec<i64> =
            c.query(&format!("SELECT id FROM probe{i}"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        let missing: Vec<i64> = acks.iter().map(|a| a.id).filter(|id| !ids.contains(id)).collect();
        assert!(missing.is_empty(), "probe{i}: {} acknowledged commits lost on {}: {:?}", missing.len(), inst.name, {
            &missing[..missing.len().min(10)]
        });
    }
}

fn writers(inst: &TestInstance, n: usize) -> Vec<Writer> {
    (0..n)
        .map(|i| Writer::start(inst.run_dir(), inst.pg_port, &format!("probe{i}"), 1, Duration::from_millis(5)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_instance_streams_and_nobody_restarts() {
    let mut cluster = TestCluster::start(3, FAST);
    let three = ["pg-1", "pg-2", "pg-3"];
    let four = ["pg-1", "pg-2", "pg-3", "pg-4"];
    assert_eq!(cluster.wait_primary(&three, BOOT).await, "pg-1");
    let w = Writer::start(
        cluster.get("pg-1").run_dir(),
        cluster.get("pg-1").pg_port,
        "probe0",
        1,
        Duration::from_millis(20),
    );
    wait_commits(&w, 0, 10).await;
    let before = pids(&cluster, &three);

    // As the operator scales out: the one configuration first, then the new pod.
    cluster.set_members(&four);
    wait_members(&cluster, &three, &four).await;
    cluster.add_instance("pg-4", |_| {});
    cluster.get("pg-4").wait_ready(BOOT).await;
    wait_streaming(cluster.get("pg-1"), cluster.get("pg-4")).await;
    wait_members(&cluster, &four, &four).await;

    let acked = w.acks().len();
    wait_commits(&w, acked, 10).await;
    assert_not_restarted(&cluster, &before);
    for name in four {
        let st = cluster.get(name).status().await.unwrap();
        assert!(!st.pending_restart.iter().any(|p| p == "members"), "{name}: {:?}", st.pending_restart);
        let m = st.lease.and_then(|l| l.membership).unwrap();
        assert!(m.listed && m.pending.is_empty(), "{name}: {m:?}");
    }
    let log = cluster.get("pg-1").log();
    assert!(log.contains("membership changed: applied without a restart"), "the change was not logged");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_added_in_synchronous_mode_loses_no_acknowledged_commit() {
    let mut cluster = TestCluster::start_with(3, FAST, sync);
    let three = ["pg-1", "pg-2", "pg-3"];
    let four = ["pg-1", "pg-2", "pg-3", "pg-4"];
    assert_eq!(cluster.wait_primary(&three, BOOT).await, "pg-1");
    cluster.wait_sync_published(Duration::from_secs(30)).await;
    let ws = writers(cluster.get("pg-1"), 3);
    wait_commits(&ws[0], 0, 50).await;
    let before = pids(&cluster, &three);

    cluster.set_members(&four);
    cluster.add_instance("pg-4", sync);
    cluster.get("pg-4").wait_ready(BOOT).await;
    wait_streaming(cluster.get("pg-1"), cluster.get("pg-4")).await;
    wait_members(&cluster, &four, &four).await;
    let acked = ws[0].acks().len();
    wait_commits(&ws[0], acked, 50).await;
    assert_not_restarted(&cluster, &before);
    let published = cluster.lease().unwrap().sync_standbys;
    assert_eq!(published.len(), 1, "number 1: an added member is a candidate, not an extra standby: {published:?}");

    // The durability probe: lose the primary; every acknowledged commit is on the new one.
    cluster.get_mut("pg-1").kill_all();
    let mut acks = Vec::new();
    for w in ws {
        acks.push(w.stop().await);
    }
    let new = cluster.wait_primary(&["pg-2", "pg-3", "pg-4"], Duration::from_secs(60)).await;
    assert!(published.contains(&new), "{new} was promoted but the published set was {published:?}");
    assert_all_present(cluster.get(&new), &acks).await;
    let total: usize = acks.iter().map(Vec::len).sum();
    eprintln!("{total} acknowledged commits, all present on {new}");
    // The new member follows the new primary, and a standby is published again.
    wait_streaming(cluster.get(&new), cluster.get("pg-4")).await;
    cluster.wait_sync_published(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_synchronous_standby_leaves_the_set_and_commits_go_on() {
    let mut cluster = TestCluster::start_with(3, FAST, sync);
    let three = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&three, BOOT).await, "pg-1");
    let published = cluster.wait_sync_published(Duration::from_secs(30)).await;
    let gone = published[0].clone();
    let stays = if gone == "pg-2" { "pg-3" } else { "pg-2" };
    let ws = writers(cluster.get("pg-1"), 2);
    wait_commits(&ws[0], 0, 50).await;
    let before = pids(&cluster, &["pg-1", stays]);

    // The one configuration every member reads no longer lists the published standby.
    let two = ["pg-1", stays];
    cluster.set_members(&two);
    wait_members(&cluster, &three, &two).await;
    let st = cluster.get(&gone).status().await.unwrap();
    assert!(!st.lease.and_then(|l| l.membership).unwrap().listed, "{gone} knows it was removed");
    wait_for("the remaining replica published instead", Duration::from_secs(30), || async {
        match cluster.lease() {
            Some(l) if l.sync_standbys == [stays.to_string()] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // Then the operator stops it.
    cluster.get(&gone).signal(nix::sys::signal::Signal::SIGTERM);
    cluster.get_mut(&gone).wait_exit(Duration::from_secs(60)).await;
    let acked = ws[0].acks().len();
    wait_commits(&ws[0], acked, 50).await;
    let want = format!("ANY 1 (\"{stays}\")");
    wait_for("the removed standby dropped from synchronous_standby_names", Duration::from_secs(10), || async {
        let c = cluster.get("pg-1").connect("postgres").await?;
        let row = c.query_one("SHOW synchronous_standby_names", &[]).await.map_err(|e| e.to_string())?;
        let ssn: String = row.get(0);
        if ssn == want { Ok(()) } else { Err(ssn) }
    })
    .await;
    assert_eq!(cluster.lease().unwrap().sync_standbys, [stays.to_string()]);
    assert_not_restarted(&cluster, &before);
    let mut acks = Vec::new();
    for w in ws {
        acks.push(w.stop().await);
    }
    // Every acknowledged commit is on the standby that stayed.
    wait_for("the standby caught up", Duration::from_secs(30), || async {
        let p = cluster.get("pg-1").status().await?;
        let r = cluster.get(stays).status().await?;
        match (p.current_lsn, r.received_lsn) {
            (Some(p), Some(r)) if r >= p => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_all_present(cluster.get(stays), &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_that_keeps_running_is_never_promoted() {
    // pg-3 is the best candidate by priority: had it stayed a member, it would be elected.
    let mut cluster = TestCluster::start_with(3, FAST, |o| {
        if o.name == "pg-3" {
            o.extra_yaml.push_str("priority: 200\n");
        }
    });
    let three = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&three, BOOT).await, "pg-1");
    let w = Writer::start(
        cluster.get("pg-1").run_dir(),
        cluster.get("pg-1").pg_port,
        "probe0",
        1,
        Duration::from_millis(10),
    );
    wait_commits(&w, 0, 50).await;
    w.stop().await;
    // Both replicas have everything: pg-3 is the most caught-up (tied) and the preferred one.
    wait_for("both replicas caught up", Duration::from_secs(30), || async {
        let p = cluster.get("pg-1").status().await?.current_lsn;
        for r in ["pg-2", "pg-3"] {
            let got = cluster.get(r).status().await?.received_lsn;
            if got < p {
                return Err(format!("{r} received {got:?}, primary at {p:?}"));
            }
        }
        Ok(())
    })
    .await;

    cluster.set_members(&["pg-1", "pg-2"]);
    wait_members(&cluster, &three, &["pg-1", "pg-2"]).await;
    let st = cluster.get("pg-3").status().await.unwrap();
    let lease = st.lease.unwrap();
    assert!(!lease.membership.unwrap().listed);
    assert!(
        lease.not_eligible_because.as_deref().is_some_and(|w| w.contains("not listed in members")),
        "{:?}",
        lease.not_eligible_because
    );
    let before = pids(&cluster, &["pg-2", "pg-3"]);

    // pg-2's lease writes are slowed down: had pg-3 raced for the lease, it would have won.
    cluster.set_fault("pg-2", Some(r#"{"fault": "delay", "ms": 300, "ops": ["create", "replace"]}"#));
    cluster.get_mut("pg-1").kill_all();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    cluster.set_fault("pg-2", None);
    assert_eq!(new, "pg-2", "the removed pg-3 was promoted");
    // Still so a while later, and pg-3 never even tried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(10)).await, "pg-2");
    assert_eq!(cluster.lease().unwrap().holder.as_deref(), Some("pg-2"));
    assert!(!cluster.get("pg-3").log().contains("acquired the lease"), "pg-3 took the lease");
    wait_streaming(cluster.get("pg-2"), cluster.get("pg-3")).await;
    assert_eq!(before["pg-3"].0, cluster.get("pg-3").manager_pid(), "pg-3's manager restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_left_out_of_members_keeps_the_lease_until_switched_over() {
    let mut cluster = TestCluster::start(3, FAST);
    let three = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&three, BOOT).await, "pg-1");
    let before = pids(&cluster, &three);
    cluster.set_members(&["pg-2", "pg-3"]);
    wait_members(&cluster, &three, &["pg-2", "pg-3"]).await;
    // Several lease durations later it is still the primary, and says what is pending.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cluster.wait_primary(&three, Duration::from_secs(10)).await, "pg-1");
    assert_eq!(cluster.lease().unwrap().transitions, 1, "no change of holder");
    let m = cluster.get("pg-1").status().await.unwrap().lease.unwrap().membership.unwrap();
    assert!(!m.listed && m.pending.iter().any(|p| p.contains("holds the lease")), "{m:?}");
    assert!(cluster.get("pg-1").log().contains("holds the lease but is not listed in members"), "no WARN");
    assert_not_restarted(&cluster, &before);

    // The operator switches over: a member takes it, and pg-1 never takes it back.
    let answer = cluster
        .get("pg-1")
        .socket_client(Duration::from_secs(60))
        .post_json::<_, serde_json::Value>("/switchover", &serde_json::json!({}), None)
        .await
        .unwrap();
    let new = answer["primary"].as_str().unwrap().to_string();
    assert!(["pg-2", "pg-3"].contains(&new.as_str()), "{answer}");
    assert_eq!(cluster.wait_primary(&three, Duration::from_secs(60)).await, new);
}

/// Failsafe on (the default), with the members' shared API token it needs.
fn with_failsafe(o: &mut InstanceOptions) {
    o.api_token = true;
}

/// The lease store of every member hangs (`on`), or answers again.
fn stall_all(cluster: &TestCluster, on: bool) {
    for name in cluster.names() {
        cluster.set_fault(&name, on.then_some(r#"{"fault":"hang"}"#));
    }
}

/// Stalls the store under a healthy three-member cluster and waits until pg-1 stays writable
/// through failsafe rounds; returns its postmaster's pid.
async fn primary_in_failsafe(cluster: &TestCluster) -> u32 {
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2", "pg-3"], BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    stall_all(cluster, true);
    wait_for("pg-1 writable through failsafe", Duration::from_secs(20), || async {
        let st = cluster.get("pg-1").status().await?;
        match st.lease.and_then(|l| l.failsafe_confirmed_age_seconds) {
            Some(_) => Ok(()),
            None => Err("no failsafe round acknowledged by everyone yet".into()),
        }
    })
    .await;
    // Well past the renew deadline (2.5 s): only failsafe keeps it writable now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(pid_alive(pg), "pg-1 fenced although every member acknowledged it");
    pg
}

async fn wait_fenced(cluster: &TestCluster, pg: u32, why: &str) {
    wait_for(why, Duration::from_secs(10), || async {
        if pid_alive(pg) {
            let st = cluster.get("pg-1").status().await?;
            Err(format!("postgres still runs; failsafe refusal {:?}", st.lease.and_then(|l| l.failsafe_refusal)))
        } else {
            Ok(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_store_outage_an_added_member_must_acknowledge_at_once() {
    let mut cluster = TestCluster::start_with(3, FAST, with_failsafe);
    let pg = primary_in_failsafe(&cluster).await;
    // pg-4 is listed but never starts: it cannot acknowledge, so failsafe may not hold.
    cluster.set_members(&["pg-1", "pg-2", "pg-3", "pg-4"]);
    wait_fenced(&cluster, pg, "pg-1 fenced: the added pg-4 did not acknowledge").await;
    assert!(cluster.get("pg-1").log().contains("pg-4"), "the refusal does not name pg-4");
    stall_all(&cluster, false);
    cluster.wait_primary(&["pg-1", "pg-2", "pg-3"], Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_store_outage_a_removed_member_must_acknowledge_until_the_store_answers() {
    let mut cluster = TestCluster::start_with(3, FAST, with_failsafe);
    let pg = primary_in_failsafe(&cluster).await;
    cluster.set_members(&["pg-1", "pg-2"]);
    wait_members(&cluster, &["pg-1"], &["pg-1", "pg-2"]).await;
    let m = cluster.get("pg-1").status().await.unwrap().lease.unwrap().membership.unwrap();
    assert!(m.pending.iter().any(|p| p.starts_with("pg-3: removed; still asked in failsafe")), "{m:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pid_alive(pg), "pg-3 still acknowledges: failsafe holds");
    // pg-3 goes away during the outage: its acknowledgement is still required.
    cluster.get_mut("pg-3").kill_all();
    wait_fenced(&cluster, pg, "pg-1 fenced: the removed pg-3 no longer acknowledges").await;
    // The store answers: pg-3 is released, and the cluster goes on without it.
    stall_all(&cluster, false);
    cluster.wait_primary(&["pg-1", "pg-2"], Duration::from_secs(60)).await;
    wait_for("pg-3 released", Duration::from_secs(20), || async {
        let m = cluster.get("pg-1").status().await?.lease.and_then(|l| l.membership).unwrap_or_default();
        if m.pending.is_empty() { Ok(()) } else { Err(format!("{:?}", m.pending)) }
    })
    .await;
}
