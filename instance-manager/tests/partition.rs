#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Network partitions, for real: each instance runs in a network namespace of its own, the
//! namespaces joined by a bridge in a hub namespace, and a cut makes the bridge drop every
//! frame of one host (a black hole: connections hang, nothing is refused). The test process
//! stays in the root namespace and talks to the instances over their Unix sockets only.
//!
//! - The primary cut off from its peers but not from its lease (a file on the shared
//!   filesystem) keeps the lease: no failover, one writer, and the replicas stream again after.
//! - The primary cut off from everything, with the Kubernetes lease on a fake API server in the
//!   hub: it fences itself before a replica may take over; routing follows the new holder; after
//!   the heal the old primary rejoins as a replica on the new timeline.
//! - A replica cut off from everything neither promotes nor disturbs the primary.
//!
//! Skipped (with a message) where network namespaces are not available (not root, no `ip`).

use std::net::SocketAddr;
use std::time::Duration;

use instance_manager::testkit::{
    Ack, ClusterLease, FAST, FakeApiServer, TestCluster, TestInstance, TestNetwork, Writer, netns_available, wait_for,
};
use tokio::time::Instant;

const BOOT: Duration = Duration::from_secs(120);
const ALL: [&str; 3] = ["pg-1", "pg-2", "pg-3"];
/// The Kubernetes namespace of the fake API server.
const NAMESPACE: &str = "db";

/// A network of `hosts`, or `None` (after saying why) where namespaces cannot be made.
fn network(hosts: usize) -> Option<TestNetwork> {
    if let Err(why) = netns_available() {
        eprintln!("skipped: network namespaces are not available here: {why}");
        return None;
    }
    Some(TestNetwork::new(hosts).expect("create the test network"))
}

/// A fake API server in the hub of `net`, with a pod per instance.
fn api_server(net: &TestNetwork) -> FakeApiServer {
    let api = FakeApiServer::start_in_hub(net, NAMESPACE).expect("start the fake API server");
    for name in ALL {
        api.add_pod(name);
    }
    api
}

/// Three lease durations: long enough for any failover to have happened.
fn three_leases() -> Duration {
    Duration::from_secs_f64(3.0 * FAST.0)
}

async fn execute(inst: &TestInstance, sql: &str) {
    let c = inst.connect("postgres").await.unwrap_or_else(|e| panic!("connect to {}: {e}", inst.name));
    c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql} on {}: {e}", inst.name));
}

/// Waits until `inst` has the row `id` of table `marks` (replicated from the primary).
async fn wait_row(inst: &TestInstance, id: i32, timeout: Duration) {
    wait_for(&format!("row {id} of marks on {}", inst.name), timeout, || async {
        let c = inst.connect("postgres").await?;
        let row = c.query_opt("SELECT 1 FROM marks WHERE id = $1", &[&id]).await.map_err(|e| e.to_string())?;
        match row {
            Some(_) => Ok(()),
            None => Err(format!("not there yet; {}", summary(inst).await)),
        }
    })
    .await
}

/// Role, timeline, WAL positions and receiver of an instance, for failure messages.
async fn summary(inst: &TestInstance) -> String {
    match inst.status().await {
        Ok(st) => format!(
            "{} is {} on timeline {:?}, received {:?}, replayed {:?}, wal receiver {:?}",
            inst.name, st.role, st.timeline, st.received_lsn, st.replayed_lsn, st.wal_receiver
        ),
        Err(e) => format!("{}: no status ({e})", inst.name),
    }
}

/// Starts a writer on every instance (only the primary will succeed).
fn writers(cluster: &TestCluster) -> Vec<(String, Writer)> {
    let pause = Duration::from_millis(20);
    let start = |(i, inst): (usize, &TestInstance)| {
        let w = Writer::start(inst.run_dir(), inst.pg_port, "probe", (i as i64 + 1) * 1_000_000, pause);
        (inst.name.clone(), w)
    };
    cluster.instances.iter().enumerate().map(start).collect()
}

async fn wait_acks(ws: &[(String, Writer)], name: &str, n: usize) {
    let w = &ws.iter().find(|(n, _)| n == name).expect("a writer for the instance").1;
    wait_for(&format!("{n} writes acknowledged on {name}"), Duration::from_secs(20), || async {
        let got = w.acks().len();
        if got >= n { Ok(()) } else { Err(format!("{got} acknowledged")) }
    })
    .await
}

async fn stop(ws: Vec<(String, Writer)>) -> std::collections::BTreeMap<String, Vec<Ack>> {
    let mut by_name = std::collections::BTreeMap::new();
    for (name, w) in ws {
        by_name.insert(name, w.stop().await);
    }
    by_name
}

/// The instances that never were primary acknowledged nothing.
fn assert_only_writers(acks: &std::collections::BTreeMap<String, Vec<Ack>>, writers: &[&str]) {
    for (name, acks) in acks {
        if !writers.contains(&name.as_str()) {
            assert!(acks.is_empty(), "{name} never was primary but acknowledged {} writes", acks.len());
        }
    }
}

/// The old primary's last acknowledged commit came before the new primary's first one.
fn assert_one_writer_at_a_time(acks: &std::collections::BTreeMap<String, Vec<Ack>>, old: &str, new: &str) {
    let last_old = acks[old].last().map(|a| a.at).expect("the old primary acknowledged writes before the cut");
    let first_new = acks[new].first().map(|a| a.at).expect("the new primary acknowledged writes");
    assert!(
        last_old < first_new,
        "two writers: the old primary acknowledged a write {:?} after the new primary's first",
        last_old - first_new
    );
    assert_only_writers(acks, &[old, new]);
}

/// The longest time between two acknowledged commits in `acks` after `from`.
fn longest_gap(acks: &[Ack], from: Instant) -> Duration {
    let times: Vec<Instant> = acks.iter().map(|a| a.at).filter(|t| *t >= from).collect();
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// The role `/status` reports, or what went wrong asking.
async fn role(inst: &TestInstance) -> String {
    match inst.status().await {
        Ok(st) => st.role.to_string(),
        Err(e) => format!("unreachable ({e})"),
    }
}

/// The holder and term of the Kubernetes Lease.
fn k8s_lease(api: &FakeApiServer) -> Option<(Option<String>, i32)> {
    let spec = api.lease("test-primary")?.spec?;
    Some((spec.holder_identity, spec.lease_transitions.unwrap_or(0)))
}

/// Waits until the `-rw` EndpointSlice routes to `ip` with `term`.
async fn wait_routing(api: &FakeApiServer, ip: std::net::Ipv4Addr, term: u64) {
    wait_for(&format!("the -rw endpointslice at {ip}, term {term}"), Duration::from_secs(20), || async {
        let slice = api.endpoint_slice("test-rw").ok_or("no endpointslice test-rw")?;
        let addresses: Vec<String> = slice.endpoints.iter().flat_map(|e| e.addresses.clone()).collect();
        let stamped = slice.metadata.annotations.as_ref().and_then(|a| a.get("pgwarden.io/term")).cloned();
        if addresses == [ip.to_string()] && stamped == Some(term.to_string()) {
            Ok(())
        } else {
            Err(format!("addresses {addresses:?}, term {stamped:?}"))
        }
    })
    .await
}

/// The `pgwarden.io/role` label of a pod.
fn role_label(api: &FakeApiServer, pod: &str) -> Option<String> {
    api.pod(pod)?.metadata.labels?.get("pgwarden.io/role").cloned()
}

/// The manager's log shows its fence carried out as one (immediate shutdown), not as the
/// fast shutdown of a role change, which waits for the WAL senders of a partitioned primary.
fn assert_fenced_immediately(inst: &TestInstance) {
    let log = inst.log();
    let lines: Vec<&str> = log.lines().collect();
    let decided = lines.iter().position(|l| l.contains(r#""message":"fencing""#));
    let decided = decided.unwrap_or_else(|| panic!("{} never decided to fence", inst.name));
    for line in &lines[decided..] {
        if line.contains("fencing: stopping postgres immediately") {
            return;
        }
        assert!(!line.contains(r#""message":"stopping postgres""#), "{} fenced by another stop: {line}", inst.name);
    }
    panic!("{} decided to fence but did not stop postgres", inst.name);
}

fn pg_addr(net: &TestNetwork, host: usize) -> SocketAddr {
    SocketAddr::from((net.host_ip(host), 5432))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_cut_off_from_its_peers_keeps_its_file_lease_and_nobody_fails_over() {
    let Some(net) = network(3) else { return };
    let cluster = TestCluster::start_on_network(&net, 3, FAST, ClusterLease::File, |_| {});
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    execute(cluster.get("pg-1"), "CREATE TABLE marks (id int); INSERT INTO marks VALUES (1)").await;
    for r in ["pg-2", "pg-3"] {
        wait_row(cluster.get(r), 1, Duration::from_secs(30)).await;
    }
    let ws = writers(&cluster);
    wait_acks(&ws, "pg-1", 5).await;

    net.cut(1).unwrap();
    let cut_at = Instant::now();
    assert_eq!(net.can_connect(2, pg_addr(&net, 1), Duration::from_secs(1)), Ok(false), "pg-2 still reaches pg-1");
    // pg-1 renews through the file; the replicas see a live lease and wait.
    while cut_at.elapsed() < three_leases() {
        let lease = cluster.lease().expect("the lease file");
        assert_eq!((lease.holder.as_deref(), lease.transitions), (Some("pg-1"), 1), "the lease moved: {lease:?}");
        for r in ["pg-2", "pg-3"] {
            let role = role(cluster.get(r)).await;
            assert_eq!(role, "replica", "{r} during the partition");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(role(cluster.get("pg-1")).await, "primary", "pg-1 after {:?} cut off", cut_at.elapsed());
    net.heal(1).unwrap();

    let acks = stop(ws).await;
    assert_only_writers(&acks, &["pg-1"]);
    let gap = longest_gap(&acks["pg-1"], cut_at);
    assert!(gap < Duration::from_secs(2), "pg-1 stopped committing for {gap:?} while cut off from its peers");
    // The replicas stream again.
    execute(cluster.get("pg-1"), "INSERT INTO marks VALUES (2)").await;
    for r in ["pg-2", "pg-3"] {
        wait_row(cluster.get(r), 2, Duration::from_secs(60)).await;
    }
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(30)).await, "pg-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_cut_off_from_everything_fences_before_a_replica_takes_over() {
    let Some(net) = network(3) else { return };
    let api = api_server(&net);
    let cluster = TestCluster::start_on_network(&net, 3, FAST, ClusterLease::Kubernetes(&api), |_| {});
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    assert_eq!(k8s_lease(&api), Some((Some("pg-1".into()), 1)));
    wait_routing(&api, net.host_ip(1), 1).await;
    execute(cluster.get("pg-1"), "CREATE TABLE marks (id int); INSERT INTO marks VALUES (1)").await;
    for r in ["pg-2", "pg-3"] {
        wait_row(cluster.get(r), 1, Duration::from_secs(30)).await;
    }
    let ws = writers(&cluster);
    wait_acks(&ws, "pg-1", 5).await;

    // pg-1 can reach neither its peers nor the API server.
    net.cut(1).unwrap();
    let cut_at = Instant::now();
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(30)).await;
    let failover = cut_at.elapsed();
    assert!(
        cluster.get("pg-1").log().contains("no successful lease renew"),
        "pg-1 did not fence for the renew deadline"
    );
    assert_fenced_immediately(cluster.get("pg-1"));
    assert_eq!(k8s_lease(&api), Some((Some(new.clone()), 2)), "one change of holder, one term");
    let k = if new == "pg-2" { 2 } else { 3 };
    wait_routing(&api, net.host_ip(k), 2).await;
    let st = cluster.get(&new).status().await.unwrap();
    assert_eq!((st.role.as_str(), st.timeline), ("primary", Some(2)), "the new primary");
    // The cut-off ex-primary cannot clear its own label: the new holder does.
    wait_for("one pod labelled primary while pg-1 is cut off", Duration::from_secs(10), || async {
        match (role_label(&api, "pg-1").as_deref(), role_label(&api, &new).as_deref()) {
            (Some("replica"), Some("primary")) => Ok(()),
            other => Err(format!("pg-1, {new}: {other:?}")),
        }
    })
    .await;
    wait_acks(&ws, &new, 5).await;
    let acks = stop(ws).await;
    assert_one_writer_at_a_time(&acks, "pg-1", &new);

    // After the heal pg-1 follows the new primary (rewound: it wrote WAL the others never got).
    net.heal(1).unwrap();
    let healed_at = Instant::now();
    execute(cluster.get(&new), "INSERT INTO marks VALUES (2)").await;
    wait_row(cluster.get("pg-1"), 2, Duration::from_secs(90)).await;
    let rejoin = healed_at.elapsed();
    // Rewound, or re-cloned when pg_rewind cannot (both start with the decision to rewind).
    assert!(
        cluster.get("pg-1").log().contains("rewinding"),
        "pg-1 wrote WAL the others never got, yet was not rewound"
    );
    wait_for("pg-1 a replica on timeline 2", Duration::from_secs(20), || async {
        match cluster.get("pg-1").status().await? {
            st if st.role == "replica" && st.timeline == Some(2) => Ok(()),
            st => Err(format!("{} on timeline {:?}", st.role, st.timeline)),
        }
    })
    .await;
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(30)).await, new, "pg-1 did not take over again");
    wait_routing(&api, net.host_ip(k), 2).await;
    wait_for("pod role labels", Duration::from_secs(40), || async {
        let labels: Vec<Option<String>> = ALL.iter().map(|p| role_label(&api, p)).collect();
        let want: Vec<Option<String>> =
            ALL.iter().map(|p| Some(if *p == new { "primary" } else { "replica" }.to_string())).collect();
        if labels == want { Ok(()) } else { Err(format!("{labels:?}")) }
    })
    .await;
    eprintln!("failover after the cut: {failover:?}; pg-1 replicating again {rejoin:?} after the heal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_cut_off_from_everything_neither_promotes_nor_disturbs_the_primary() {
    let Some(net) = network(3) else { return };
    let api = api_server(&net);
    let cluster = TestCluster::start_on_network(&net, 3, FAST, ClusterLease::Kubernetes(&api), |_| {});
    assert_eq!(cluster.wait_primary(&ALL, BOOT).await, "pg-1");
    execute(cluster.get("pg-1"), "CREATE TABLE marks (id int); INSERT INTO marks VALUES (1)").await;
    wait_row(cluster.get("pg-3"), 1, Duration::from_secs(30)).await;
    let ws = writers(&cluster);
    wait_acks(&ws, "pg-1", 5).await;

    net.cut(3).unwrap();
    let cut_at = Instant::now();
    while cut_at.elapsed() < three_leases() {
        assert_eq!(k8s_lease(&api), Some((Some("pg-1".into()), 1)), "the lease moved");
        assert_eq!(role(cluster.get("pg-3")).await, "replica", "pg-3 during the partition");
        assert_eq!(role(cluster.get("pg-1")).await, "primary", "pg-1 during the partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = cluster.get("pg-3").status().await.unwrap();
    let lease = st.lease.expect("pg-3 reports its lease view");
    assert!(lease.last_error.is_some(), "pg-3 read the lease while cut off: {lease:?}");
    net.heal(3).unwrap();

    let acks = stop(ws).await;
    assert_only_writers(&acks, &["pg-1"]);
    let gap = longest_gap(&acks["pg-1"], cut_at);
    assert!(gap < Duration::from_secs(2), "the primary stopped committing for {gap:?} while a replica was cut off");
    execute(cluster.get("pg-1"), "INSERT INTO marks VALUES (2)").await;
    wait_row(cluster.get("pg-3"), 2, Duration::from_secs(60)).await;
    assert_eq!(cluster.wait_primary(&ALL, Duration::from_secs(30)).await, "pg-1");
    assert_eq!(k8s_lease(&api), Some((Some("pg-1".into()), 1)), "no change of term");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_connect_to_an_unanswering_primary_gives_up_in_seconds_and_tries_again() {
    // In Kubernetes a re-created primary pod has a new address, and a replica resolving its
    // name can get the old one for a while (DNS caches): its WAL receiver connects to an
    // address where nothing answers. Postgres' WAL receiver ignores `connect_timeout`; only a
    // TCP user timeout ends such a connect in seconds rather than after every SYN retry (about
    // two minutes), so that the next attempt resolves the name again. Here the unanswering
    // address is the primary's, cut off: every attempt must end quickly and another follow.
    let Some(net) = network(2) else { return };
    let cluster = TestCluster::start_on_network(&net, 2, FAST, ClusterLease::File, |_| {});
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2"], BOOT).await, "pg-1");
    execute(cluster.get("pg-1"), "CREATE TABLE marks (id int); INSERT INTO marks VALUES (1)").await;
    let replica = cluster.get("pg-2");
    wait_row(replica, 1, Duration::from_secs(30)).await;

    net.cut(1).unwrap();
    // A new connection has to be made: the receiver streaming now is stopped.
    let c = replica.connect("postgres").await.unwrap();
    let pid: i32 = c.query_one("SELECT pid FROM pg_stat_wal_receiver", &[]).await.unwrap().get(0);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let failed = |log: &str| log.matches("could not connect to the primary server").count();
    let before = failed(&replica.log());
    let started = Instant::now();
    wait_for("two connect attempts to end while the primary is cut off", Duration::from_secs(40), || async {
        let n = failed(&replica.log()) - before;
        if n >= 2 { Ok(()) } else { Err(format!("{n} ended after {:?}", started.elapsed())) }
    })
    .await;
    net.heal(1).unwrap();

    execute(cluster.get("pg-1"), "INSERT INTO marks VALUES (2)").await;
    wait_row(replica, 2, Duration::from_secs(30)).await;
}
