#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The lease store misbehaving under a running cluster (file backend; the Kubernetes backend
//! shares the HA loop): a deleted lease is not a free one, terms never go backwards, a slow
//! store is not a frozen process, a fence after which the lease is still ours resumes on the
//! same timeline, and a lease of another cluster is never acted on.

use std::time::Duration;

use instance_manager::testkit::{FAST, TestCluster, Timing, Writer, pid_alive, wait_for};
use nix::sys::signal::Signal;

const BOOT: Duration = Duration::from_secs(120);

/// Lease timing with room for stalls: renewDeadline 6 s, fence budget 1.5 s.
const ROOMY: Timing = (9.0, 6.0, 1.0, 1.5);

async fn writer_on(cluster: &TestCluster, name: &str, table: &str) -> Writer {
    let p = cluster.get(name);
    let w = Writer::start(p.run_dir(), p.pg_port, table, 1, Duration::from_millis(20));
    wait_for("writes acknowledged", Duration::from_secs(20), || async {
        if w.acks().len() > 5 { Ok(()) } else { Err(format!("{} acks", w.acks().len())) }
    })
    .await;
    w
}

/// Waits until pg-1 is the primary of `cluster` (three members) and starts a writer on it:
/// (pg-1's postmaster pid, the lease's term, the writer).
async fn primary_with_writer(cluster: &TestCluster) -> (u32, u64, Writer) {
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2", "pg-3"], BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    (pg, term(cluster), writer_on(cluster, "pg-1", "probe").await)
}

fn term(cluster: &TestCluster) -> u64 {
    cluster.lease().map(|l| l.transitions).unwrap_or(0)
}

async fn timeline(cluster: &TestCluster, name: &str) -> Option<u32> {
    cluster.get(name).status().await.ok().and_then(|s| s.timeline)
}

/// Asserts that every acknowledged id of `table` is on `name`.
async fn all_present(cluster: &TestCluster, name: &str, table: &str, acks: &[instance_manager::testkit::Ack]) {
    let c = cluster.get(name).connect("postgres").await.unwrap();
    let ids: std::collections::BTreeSet<i64> =
        c.query(&format!("SELECT id FROM {table}"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let missing: Vec<i64> = acks.iter().map(|a| a.id).filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged commits missing on {name}: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_deleted_under_a_healthy_primary_is_recreated_by_it_above_the_old_term() {
    let cluster = TestCluster::start(3, FAST);
    let all = ["pg-1", "pg-2", "pg-3"];
    let (pg, before, w) = primary_with_writer(&cluster).await;

    cluster.delete_lease();
    let lease = wait_for("the lease recreated", Duration::from_secs(20), || async {
        match cluster.lease() {
            Some(l) => Ok(l),
            None => Err("missing".into()),
        }
    })
    .await;
    assert_eq!(lease.holder.as_deref(), Some("pg-1"), "recreated by someone else than its holder: {lease:?}");
    assert!(lease.transitions > before, "the term went from {before} to {}", lease.transitions);
    let n = w.acks().len();
    wait_for("writes go on", Duration::from_secs(10), || async {
        if w.acks().len() > n + 20 { Ok(()) } else { Err(format!("{} acks", w.acks().len())) }
    })
    .await;
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(10)).await, "pg-1");
    assert_eq!(cluster.get("pg-1").postgres_pid(), Some(pg), "postgres was restarted");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1));
    assert!(!cluster.get("pg-1").log().contains("\"fencing\""), "pg-1 fenced:\n{}", cluster.get("pg-1").log_tail(30));
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_deleted_under_a_frozen_primary_gives_one_writer_and_loses_nothing() {
    let cluster = TestCluster::start_with(3, FAST, |o| o.extra_yaml.push_str("synchronous: {number: 1}\n"));
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");
    cluster.wait_sync_published(Duration::from_secs(30)).await;
    // Every member must have read the published set: a replica that never saw it cannot know
    // who has every acknowledged commit, and waits (safely) once the lease is gone.
    cluster.wait_sync_read_by_all(Duration::from_secs(30)).await;
    let before = term(&cluster);
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    let old = writer_on(&cluster, "pg-1", "probe").await;

    cluster.get("pg-1").signal(Signal::SIGSTOP);
    cluster.delete_lease();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    let new_writer = writer_on(&cluster, &new, "probe_new").await;
    assert!(!pid_alive(pg), "the frozen primary's postgres still runs beside the new primary");
    let after = term(&cluster);
    assert!(after > before, "the new lease's term {after} is not above the deleted one's {before}");
    let old_acks = old.stop().await;
    let new_acks = new_writer.stop().await;
    let last_old = old_acks.last().unwrap().at;
    assert!(last_old < new_acks.first().unwrap().at, "two writers: pg-1 acknowledged after {new}'s first write");
    all_present(&cluster, &new, "probe", &old_acks).await;

    cluster.get("pg-1").signal(Signal::SIGCONT);
    wait_for("pg-1 rejoins as a replica", Duration::from_secs(60), || async {
        let st = cluster.get("pg-1").status().await?;
        if st.role == "replica" { Ok(()) } else { Err(st.role.to_string()) }
    })
    .await;
    assert_eq!(term(&cluster), after, "the stale primary changed the lease");
}

/// Every member's store stalls at once, as when the API server or etcd stops answering.
fn stall_all(cluster: &TestCluster, on: bool) {
    for name in cluster.names() {
        cluster.set_fault(&name, on.then_some(r#"{"fault":"hang"}"#));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_stall_shorter_than_the_renew_deadline_costs_nothing() {
    let cluster = TestCluster::start(3, ROOMY);
    let (pg, before, w) = primary_with_writer(&cluster).await;

    // renewDeadline 6 s - fence budget 1.5 s: a 4 s stall must not fence.
    stall_all(&cluster, true);
    let during = w.acks().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let acked_during_stall = w.acks().len() - during;
    stall_all(&cluster, false);

    let n = w.acks().len();
    wait_for("writes go on", Duration::from_secs(10), || async {
        if w.acks().len() > n + 20 { Ok(()) } else { Err(format!("{} acks", w.acks().len())) }
    })
    .await;
    let log = cluster.get("pg-1").log();
    assert!(!log.contains("\"fencing\""), "a 4 s stall fenced the primary:\n{}", cluster.get("pg-1").log_tail(40));
    assert!(acked_during_stall > 20, "only {acked_during_stall} writes acknowledged during the stall");
    assert_eq!(cluster.get("pg-1").postgres_pid(), Some(pg), "postgres was restarted");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1), "a new timeline for a stall");
    assert_eq!(term(&cluster), before, "leadership moved");
    assert!(log.contains("the lease store does not answer"), "the stall was not logged");
    w.stop().await;
}

/// Failsafe off (`lease.failsafe: false`).
fn without_failsafe(o: &mut instance_manager::testkit::InstanceOptions) {
    o.extra_yaml = o.extra_yaml.replace("  faultFile:", "  failsafe: false\n  faultFile:");
}

/// Failsafe on (the default), with the members' shared API token it needs.
fn with_failsafe(o: &mut instance_manager::testkit::InstanceOptions) {
    o.api_token = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_fenced_by_an_outage_resumes_on_its_own_timeline() {
    let cluster = TestCluster::start_with(3, FAST, without_failsafe);
    let all = ["pg-1", "pg-2", "pg-3"];
    let (pg, before, w) = primary_with_writer(&cluster).await;

    // Longer than the lease itself: the primary must fence (renewDeadline 2.5 s)...
    stall_all(&cluster, true);
    wait_for("pg-1 fenced", Duration::from_secs(10), || async {
        if pid_alive(pg) { Err("postgres still runs".into()) } else { Ok(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stall_all(&cluster, false);

    // ... and, as nobody else took the lease, come back as the primary on timeline 1.
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(60)).await, "pg-1");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1), "a new timeline although leadership never moved");
    let lease = cluster.lease().unwrap();
    assert_eq!((lease.holder.as_deref(), lease.transitions), (Some("pg-1"), before));
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
    for r in ["pg-2", "pg-3"] {
        assert_eq!(timeline(&cluster, r).await, Some(1), "{r} is not on timeline 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_cluster_never_acts_on_a_shared_lease() {
    let ours = TestCluster::start(1, FAST);
    assert_eq!(ours.wait_primary(&["pg-1"], BOOT).await, "pg-1");
    let lease_before = ours.lease().unwrap();
    assert_eq!(lease_before.cluster.as_deref(), Some("test"), "the lease carries the cluster's name");

    // Cluster "other", also with a member pg-1, pointed at the same lease file by mistake.
    let shared = ours.lease_path.display().to_string();
    let other = TestCluster::start_with(1, FAST, |o| {
        o.cluster = "other".into();
        let own = o.extra_yaml.lines().find_map(|l| l.trim().strip_prefix("path: ")).unwrap().to_string();
        o.extra_yaml = o.extra_yaml.replace(&own, &shared);
    });
    let refused = wait_for("the other cluster's member refuses the lease", Duration::from_secs(30), || async {
        let st = other.get("pg-1").status().await?;
        match st.lease.and_then(|l| l.last_error) {
            Some(e) if e.contains("belongs to cluster \"test\"") => Ok(e),
            e => Err(format!("{e:?}")),
        }
    })
    .await;
    assert!(refused.contains("lease.path"), "no hint: {refused}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!matches!(other.get("pg-1").get("/primary").await, Ok((200, _))), "the other cluster's pg-1 is primary");
    assert_eq!(ours.wait_primary(&["pg-1"], Duration::from_secs(10)).await, "pg-1");
    let lease_after = ours.lease().unwrap();
    assert_eq!(
        (lease_after.cluster.as_deref(), lease_after.transitions),
        (Some("test"), lease_before.transitions),
        "the other cluster's member wrote the lease"
    );
    assert!(other.get("pg-1").log().contains("the lease is another cluster's"), "not logged at ERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failsafe_an_outage_much_longer_than_the_lease_costs_no_writes() {
    let cluster = TestCluster::start_with(3, FAST, with_failsafe);
    let all = ["pg-1", "pg-2", "pg-3"];
    let (pg, before, w) = primary_with_writer(&cluster).await;

    // Five times the renew deadline (2.5 s), with every member healthy.
    stall_all(&cluster, true);
    let during = w.acks().len();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let st = cluster.get("pg-1").status().await.unwrap();
    let acked_during = w.acks().len() - during;
    stall_all(&cluster, false);

    assert!(
        st.lease.as_ref().is_some_and(|l| l.failsafe_confirmed_age_seconds.is_some()),
        "not in failsafe: {:?}",
        st.lease
    );
    let n = w.acks().len();
    wait_for("writes go on", Duration::from_secs(10), || async {
        if w.acks().len() > n + 20 { Ok(()) } else { Err(format!("{} acks", w.acks().len())) }
    })
    .await;
    assert!(!cluster.get("pg-1").log().contains("\"fencing\""), "fenced:\n{}", cluster.get("pg-1").log_tail(40));
    assert!(acked_during > 100, "only {acked_during} writes acknowledged during the outage");
    assert_eq!(cluster.get("pg-1").postgres_pid(), Some(pg), "postgres was restarted");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1));
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(20)).await, "pg-1");
    assert_eq!(term(&cluster), before, "leadership moved");
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_failsafe_one_unreachable_member_fences_the_primary_at_its_deadline() {
    let cluster = TestCluster::start_with(3, FAST, with_failsafe);
    let all = ["pg-1", "pg-2", "pg-3"];
    let (pg, _, w) = primary_with_writer(&cluster).await;

    // pg-3's manager cannot answer (frozen); then the store goes away for everyone.
    cluster.get("pg-3").signal(Signal::SIGSTOP);
    stall_all(&cluster, true);
    wait_for("pg-1 fenced", Duration::from_secs(15), || async {
        if pid_alive(pg) { Err("postgres still runs".into()) } else { Ok(()) }
    })
    .await;
    let log = cluster.get("pg-1").log();
    assert!(
        log.contains("not every member acknowledged"),
        "the refusal was not logged:\n{}",
        cluster.get("pg-1").log_tail(30)
    );
    stall_all(&cluster, false);
    cluster.get("pg-3").signal(Signal::SIGCONT);
    // Nobody else took the lease: pg-1 resumes on its own timeline.
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(60)).await, "pg-1");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1));
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
}
