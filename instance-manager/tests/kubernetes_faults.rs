#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Kubernetes API server misbehaving under a running cluster: three real instance managers
//! with `lease.backend: kubernetes` against the testkit's fake API server (real HTTP, in the hub
//! of a [`TestNetwork`]), each in a network namespace of its own, with real Postgres.
//!
//! - API stalls of 5 s and 8 s (every call held, as a stopped API server or etcd) cost nothing:
//!   no fence, the same Postgres, the same timeline, writes acknowledged throughout. Timing: the
//!   defaults with renewDeadline 11 s, so that renewDeadline − fenceBudget = 9 s is strictly
//!   above both stalls (at the default 10 s, 8 s would be exactly on the limit).
//! - A 60 s outage without failsafe (30 s of 500 "etcdserver: request timed out", then 30 s of reset
//!   connections), default timing: the primary fences at renewDeadline (not before), nobody else
//!   is promoted, and afterwards it resumes on the same timeline with every acknowledged write.
//! - The same outage with `lease.failsafe` (every member acknowledging the primary over the
//!   peer API): no fence, no gap, the same Postgres; with one member stopped: fence at the
//!   renew deadline, as without failsafe.
//! - The Lease deleted under a frozen primary (its manager stopped): one writer throughout, a
//!   new term above the old, and the `-rw` EndpointSlice names the new primary within a retry
//!   period and is never rewritten by the stale primary once it runs again. Deleted under a
//!   healthy primary: it recreates the Lease above the old term at once, and the slice follows.
//!
//! Skipped (with a message) where network namespaces are not available (not root, no `ip`).

use std::collections::BTreeSet;
use std::time::Duration;

use instance_manager::testkit::{
    Ack, ClusterLease, DEFAULTS, FakeApiServer, Fault, InstanceOptions, TestCluster, TestNetwork, Timing, Verbs,
    Writer, netns_available, pid_alive, wait_for,
};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::time::Instant;

const BOOT: Duration = Duration::from_secs(120);
const ALL: [&str; 3] = ["pg-1", "pg-2", "pg-3"];
const NAMESPACE: &str = "db";
/// The defaults with renewDeadline 11 s: renewDeadline − fenceBudget = 9 s, above an 8 s stall.
const STALL_ROOM: Timing = (DEFAULTS.0, 11.0, DEFAULTS.2, DEFAULTS.3);

/// A network of 3 hosts, or `None` (after saying why) where namespaces cannot be made.
fn network() -> Option<TestNetwork> {
    if let Err(why) = netns_available() {
        eprintln!("skipped: network namespaces are not available here: {why}");
        return None;
    }
    Some(TestNetwork::new(3).expect("create the test network"))
}

/// A fake API server in the hub of `net`, with a pod per instance.
fn api_server(net: &TestNetwork) -> FakeApiServer {
    let api = FakeApiServer::start_in_hub(net, NAMESPACE).expect("start the fake API server");
    for name in ALL {
        api.add_pod(name);
    }
    api
}

/// The holder and term of the Lease, as stored.
fn lease(api: &FakeApiServer) -> Option<(Option<String>, u64)> {
    let spec = api.lease("test-primary")?.spec?;
    Some((spec.holder_identity, spec.lease_transitions.unwrap_or(0) as u64))
}

fn term(api: &FakeApiServer) -> u64 {
    lease(api).map(|(_, t)| t).unwrap_or(0)
}

/// The addresses and term annotation of a stored `-rw` EndpointSlice version.
fn routed(slice: &Value) -> (Vec<String>, Option<u64>) {
    let addresses = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let term = slice["metadata"]["annotations"]["pgwarden.io/term"].as_str().and_then(|t| t.parse().ok());
    (addresses, term)
}

/// Waits until the `-rw` EndpointSlice routes to `ip` with `term`.
async fn wait_routing(api: &FakeApiServer, ip: std::net::Ipv4Addr, term: u64, timeout: Duration) {
    wait_for(&format!("the -rw endpointslice at {ip}, term {term}"), timeout, || async {
        let slice = api.get("endpointslices", "test-rw").ok_or("no endpointslice test-rw")?;
        match routed(&slice) {
            (a, Some(t)) if a == [ip.to_string()] && t == term => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn writer_on(cluster: &TestCluster, name: &str, table: &str) -> Writer {
    let p = cluster.get(name);
    let w = Writer::start(p.run_dir(), p.pg_port, table, 1, Duration::from_millis(20));
    wait_for(&format!("writes acknowledged on {name}"), Duration::from_secs(20), || async {
        if w.acks().len() > 5 { Ok(()) } else { Err(format!("{} acks", w.acks().len())) }
    })
    .await;
    w
}

async fn timeline(cluster: &TestCluster, name: &str) -> Option<u32> {
    cluster.get(name).status().await.ok().and_then(|s| s.timeline)
}

/// The longest time between two acknowledged commits within `[from, to]`, the bounds included
/// as if they were commits (so no commit at all is a gap of the whole window).
fn longest_gap(acks: &[Ack], from: Instant, to: Instant) -> Duration {
    let mut times = vec![from];
    times.extend(acks.iter().map(|a| a.at).filter(|t| *t > from && *t < to));
    times.push(to);
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Asserts that every acknowledged id of `table` is on `name`.
async fn all_present(cluster: &TestCluster, name: &str, table: &str, acks: &[Ack]) {
    let c = cluster.get(name).connect("postgres").await.unwrap();
    let ids: BTreeSet<i64> =
        c.query(&format!("SELECT id FROM {table}"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let missing: Vec<i64> = acks.iter().map(|a| a.id).filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged commits missing on {name}: {:?}",
        missing.len(),
        &missing[..10.min(missing.len())]
    );
}

/// Asserts that no instance but `primary` answers `/primary` 200.
async fn assert_no_other_primary(cluster: &TestCluster, primary: &str, when: &str) {
    for inst in cluster.instances.iter().filter(|i| i.name != primary) {
        let answer = inst.get("/primary").await;
        assert!(!matches!(answer, Ok((200, _))), "{} is primary {when}", inst.name);
    }
}

/// Waits until the Lease was renewed after `after` (wall clock).
async fn wait_renewed_after(api: &FakeApiServer, after: jiff::Timestamp) {
    wait_for("a lease renew after the fault", Duration::from_secs(20), || async {
        let renewed = api.lease("test-primary").and_then(|l| l.spec).and_then(|s| s.renew_time).map(|t| t.0);
        match renewed {
            Some(t) if t > after => Ok(()),
            other => Err(format!("renewTime {other:?}")),
        }
    })
    .await
}

/// `lease.failsafe` on or off; on, the members share an API token (failsafe asks them with it).
fn failsafe(on: bool) -> impl Fn(&mut InstanceOptions) {
    move |o| {
        o.extra_yaml = o.extra_yaml.replacen("lease:\n", &format!("lease:\n  failsafe: {on}\n"), 1);
        o.api_token = on;
    }
}

/// A 60 s outage (every API call answered 500 "etcdserver: request timed out"); returns how far
/// into it the primary's postmaster `pg` was gone, if it was.
async fn outage_of_60_seconds(cluster: &TestCluster, api: &FakeApiServer, pg: u32) -> Option<Duration> {
    let start = Instant::now();
    api.set_fault(Fault::etcd_timeout(), Verbs::All, Some(Duration::from_secs(60)));
    let mut fenced_after = None;
    while start.elapsed() < Duration::from_secs(60) {
        if fenced_after.is_none() && !pid_alive(pg) {
            fenced_after = Some(start.elapsed());
        }
        assert_no_other_primary(cluster, "pg-1", "during the outage").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fenced_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_with_failsafe_and_every_member_healthy_costs_nothing() {
    let Some(net) = network() else { return };
    let api = api_server(&net);
    let cluster = TestCluster::start_on_network(&net, 3, DEFAULTS, ClusterLease::Kubernetes(&api), failsafe(true));
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    let before = term(&api);
    let w = writer_on(&cluster, "pg-1", "probe").await;

    let from = Instant::now();
    let fenced = outage_of_60_seconds(&cluster, &api, pg).await;
    let to = Instant::now();
    assert_eq!(
        fenced,
        None,
        "failsafe on, every member healthy, yet the primary fenced:\n{}",
        cluster.get("pg-1").log_tail(40)
    );
    wait_renewed_after(&api, jiff::Timestamp::now()).await;
    let gap = longest_gap(&w.acks(), from, to);
    assert!(gap < Duration::from_secs(2), "no write acknowledged for {gap:?} during the outage");
    assert_eq!(cluster.get("pg-1").postgres_pid(), Some(pg), "postgres was restarted");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1), "a new timeline");
    assert_eq!(lease(&api), Some((Some("pg-1".into()), before)), "leadership moved");
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(30)).await, "pg-1");
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_with_a_member_unreachable_fences_at_the_renew_deadline() {
    let Some(net) = network() else { return };
    let api = api_server(&net);
    let cluster = TestCluster::start_on_network(&net, 3, DEFAULTS, ClusterLease::Kubernetes(&api), failsafe(true));
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    let before = term(&api);
    let w = writer_on(&cluster, "pg-1", "probe").await;

    // pg-3's manager is stopped: it cannot acknowledge, so failsafe may not hold.
    cluster.get("pg-3").signal(Signal::SIGSTOP);
    let fenced = outage_of_60_seconds(&cluster, &api, pg).await;
    cluster.get("pg-3").signal(Signal::SIGCONT);
    let fenced = fenced.expect("failsafe held although a member could not acknowledge");
    assert!(
        fenced >= Duration::from_secs(7) && fenced <= Duration::from_secs(15),
        "fenced {fenced:?} into the outage, not at the renew deadline (10 s)"
    );
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(90)).await, "pg-1");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1), "a new timeline although leadership never moved");
    assert_eq!(lease(&api), Some((Some("pg-1".into()), before)), "the lease moved");
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stalls_of_5_and_8_seconds_cost_nothing() {
    let Some(net) = network() else { return };
    let api = api_server(&net);
    let cluster = TestCluster::start_on_network(&net, 3, STALL_ROOM, ClusterLease::Kubernetes(&api), |_| {});
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    let before = term(&api);
    let w = writer_on(&cluster, "pg-1", "probe").await;

    for secs in [5, 8] {
        let stall = Duration::from_secs(secs);
        let (from, n) = (Instant::now(), w.acks().len());
        api.set_fault(Fault::stall(), Verbs::All, Some(stall));
        while from.elapsed() < stall {
            assert_no_other_primary(&cluster, "pg-1", &format!("during a {secs} s stall")).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let to = Instant::now();
        wait_renewed_after(&api, jiff::Timestamp::now()).await;
        let acks = w.acks();
        let gap = longest_gap(&acks, from, to);
        let during = acks.iter().filter(|a| a.at > from && a.at < to).count();
        eprintln!("{secs} s stall: {during} writes acknowledged, longest gap {gap:?} ({} before)", n);
        assert!(during > 20, "only {during} writes acknowledged during a {secs} s stall");
        assert!(gap < Duration::from_secs(2), "no write acknowledged for {gap:?} during a {secs} s stall");
    }
    let log = cluster.get("pg-1").log();
    assert!(
        !log.contains(r#""message":"fencing""#),
        "a stall fenced the primary:\n{}",
        cluster.get("pg-1").log_tail(40)
    );
    assert_eq!(cluster.get("pg-1").postgres_pid(), Some(pg), "postgres was restarted");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1), "a new timeline for a stall");
    assert_eq!(lease(&api), Some((Some("pg-1".into()), before)), "leadership moved");
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(20)).await, "pg-1");
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_without_failsafe_fences_at_the_renew_deadline_and_resumes_on_the_same_timeline() {
    let Some(net) = network() else { return };
    let api = api_server(&net);
    let cluster = TestCluster::start_on_network(&net, 3, DEFAULTS, ClusterLease::Kubernetes(&api), failsafe(false));
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    let before = term(&api);
    let w = writer_on(&cluster, "pg-1", "probe").await;

    // 60 s: 30 s of etcd timeouts, then 30 s of connections reset without an answer.
    let half = Duration::from_secs(30);
    let start = Instant::now();
    api.set_fault(Fault::etcd_timeout(), Verbs::All, Some(half));
    let mut fenced_after = None;
    let mut reset_laid = false;
    while start.elapsed() < 2 * half {
        if !reset_laid && start.elapsed() >= half {
            api.set_fault(Fault::Reset, Verbs::All, Some(2 * half - start.elapsed()));
            reset_laid = true;
        }
        if fenced_after.is_none() && !pid_alive(pg) {
            fenced_after = Some(start.elapsed());
        }
        assert_no_other_primary(&cluster, "pg-1", "during the outage").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fenced_after = fenced_after.expect("the primary never fenced during a 60 s outage");
    eprintln!("fenced {fenced_after:?} into the outage");
    // The last renew before the outage was sent up to a retry period before it began.
    assert!(
        fenced_after >= Duration::from_secs(7) && fenced_after <= Duration::from_secs(15),
        "fenced {fenced_after:?} into the outage, not at the renew deadline (10 s)"
    );
    let log = cluster.get("pg-1").log();
    assert!(
        log.contains("no successful lease renew"),
        "not fenced for the renew deadline:\n{}",
        cluster.get("pg-1").log_tail(40)
    );
    assert!(!log.contains("woke up later than the fence budget"), "the outage was taken for a frozen process");

    // Nobody else took the lease: pg-1 comes back as the primary on timeline 1.
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(60)).await, "pg-1");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1), "a new timeline although leadership never moved");
    assert_eq!(lease(&api), Some((Some("pg-1".into()), before)), "the lease moved");
    let holders: BTreeSet<Option<String>> = api
        .history("leases", "test-primary")
        .iter()
        .map(|v| v["spec"]["holderIdentity"].as_str().map(str::to_string))
        .collect();
    assert_eq!(holders, BTreeSet::from([Some("pg-1".to_string())]), "the lease was ever held by another");
    let n = w.acks().len();
    wait_for("writes go on", Duration::from_secs(20), || async {
        if w.acks().len() > n + 20 { Ok(()) } else { Err(format!("{} acks", w.acks().len())) }
    })
    .await;
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
    for r in ["pg-2", "pg-3"] {
        assert_eq!(timeline(&cluster, r).await, Some(1), "{r} is not on timeline 1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_deleted_under_a_frozen_primary_gives_one_writer_and_routing_never_goes_back() {
    let Some(net) = network() else { return };
    let api = api_server(&net);
    let sync = |o: &mut InstanceOptions| o.extra_yaml.push_str("synchronous: {number: 1}\n");
    let cluster = TestCluster::start_on_network(&net, 3, DEFAULTS, ClusterLease::Kubernetes(&api), sync);
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    // Every member must have read the published set: a replica that never saw it cannot know
    // who has every acknowledged commit, and waits for ever once the lease is gone.
    cluster.wait_sync_read_by_all(Duration::from_secs(30)).await;
    let before = term(&api);
    wait_routing(&api, net.host_ip(1), before, Duration::from_secs(20)).await;
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    let old = writer_on(&cluster, "pg-1", "probe").await;

    cluster.get("pg-1").signal(Signal::SIGSTOP);
    assert!(api.delete("leases", "test-primary"), "no lease to delete");
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(60)).await;
    let promoted = Instant::now();
    let after = term(&api);
    assert!(after > before, "the new lease's term {after} is not above the deleted one's {before}");
    let k = if new == "pg-2" { 2 } else { 3 };
    // Within a retry period (2 s) of the new primary answering /primary, plus polling slack.
    wait_routing(&api, net.host_ip(k), after, Duration::from_secs(3)).await;
    eprintln!("-rw named {new} {:?} after it answered /primary", promoted.elapsed());
    let new_writer = writer_on(&cluster, &new, "probe_new").await;
    assert!(!pid_alive(pg), "the frozen primary's postgres still runs beside the new primary");
    let old_acks = old.stop().await;
    let new_acks = new_writer.stop().await;
    assert!(
        old_acks.last().unwrap().at < new_acks.first().unwrap().at,
        "two writers: pg-1 acknowledged after {new}'s first write"
    );
    all_present(&cluster, &new, "probe", &old_acks).await;

    // The stale primary runs again: it rejoins and never touches the lease or routing.
    let slice_versions = api.history("endpointslices", "test-rw").len();
    cluster.get("pg-1").signal(Signal::SIGCONT);
    wait_for("pg-1 rejoins as a replica", Duration::from_secs(60), || async {
        let st = cluster.get("pg-1").status().await?;
        if st.role == "replica" { Ok(()) } else { Err(st.role.to_string()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(lease(&api), Some((Some(new.clone()), after)), "the lease changed after pg-1 ran again");
    for v in &api.history("endpointslices", "test-rw")[slice_versions..] {
        let (addresses, stamped) = routed(v);
        assert_eq!(
            (addresses, stamped),
            (vec![net.host_ip(k).to_string()], Some(after)),
            "the -rw slice was rewritten after the stale primary ran again"
        );
    }
    let history = api.history("leases", "test-primary");
    let deleted = history.iter().position(Value::is_null).expect("the deletion is in the history");
    for v in &history[deleted + 1..] {
        assert_ne!(v["spec"]["holderIdentity"].as_str(), Some("pg-1"), "the stale primary wrote the new lease");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_deleted_under_a_healthy_primary_is_recreated_by_it_and_routing_follows_the_new_term() {
    let Some(net) = network() else { return };
    let api = api_server(&net);
    let cluster = TestCluster::start_on_network(&net, 3, DEFAULTS, ClusterLease::Kubernetes(&api), |_| {});
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    let before = term(&api);
    wait_routing(&api, net.host_ip(1), before, Duration::from_secs(20)).await;
    let pg = cluster.get("pg-1").postgres_pid().unwrap();
    let w = writer_on(&cluster, "pg-1", "probe").await;

    let deleted_at = Instant::now();
    assert!(api.delete("leases", "test-primary"), "no lease to delete");
    let recreated = wait_for("the lease recreated", Duration::from_secs(20), || async {
        match lease(&api) {
            Some(l) => Ok(l),
            None => Err("missing".into()),
        }
    })
    .await;
    assert_eq!(recreated.0.as_deref(), Some("pg-1"), "recreated by another member: {recreated:?}");
    assert!(recreated.1 > before, "the term went from {before} to {}", recreated.1);
    // The slice follows the new term within a retry period (2 s) of the recreation.
    wait_routing(&api, net.host_ip(1), recreated.1, Duration::from_secs(4)).await;
    eprintln!("lease recreated and -rw restamped {:?} after the deletion", deleted_at.elapsed());
    let n = w.acks().len();
    wait_for("writes go on", Duration::from_secs(10), || async {
        if w.acks().len() > n + 20 { Ok(()) } else { Err(format!("{} acks", w.acks().len())) }
    })
    .await;
    assert_eq!(cluster.get("pg-1").postgres_pid(), Some(pg), "postgres was restarted");
    assert_eq!(timeline(&cluster, "pg-1").await, Some(1));
    assert_no_other_primary(&cluster, "pg-1", "after the deletion").await;
    let acks = w.stop().await;
    all_present(&cluster, "pg-1", "probe", &acks).await;
}
