#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Planned handovers: a switchover to a named replica and to the best one, a SIGTERM on the
//! primary handing over before the manager exits, and the mutating endpoints' authentication.

use std::time::Duration;

use instance_manager::testkit::{FAST, TestCluster, Writer, manager_binary, wait_for};
use nix::sys::signal::Signal;

const BOOT: Duration = Duration::from_secs(120);

fn cli(cluster: &TestCluster, name: &str, args: &[&str]) -> (bool, String) {
    let inst = cluster.get(name);
    let out = std::process::Command::new(manager_binary())
        .arg("--api")
        .arg(inst.socket_url())
        .args(args)
        .output()
        .expect("run the CLI");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The longest time between two acknowledged writes of all the writers together.
fn longest_gap(acks: &mut [instance_manager::testkit::Ack]) -> Duration {
    acks.sort_by_key(|a| a.at);
    acks.windows(2).map(|w| w[1].at - w[0].at).max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_a_named_then_to_the_best_replica() {
    let cluster = TestCluster::start(3, FAST);
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");

    // Mutating endpoints over TCP need a token; none is configured here.
    let (code, body) = {
        let c = cluster.get("pg-1").client();
        match c.post_json::<_, serde_json::Value>("/switchover", &serde_json::json!({}), None).await {
            Ok(v) => (200, v.to_string()),
            Err(e) => (0, e.to_string()),
        }
    };
    assert!(code != 200 && body.contains("no api.tokenFile"), "{body}");

    // A replica refuses to start a switchover; the primary hands over to pg-3.
    let (ok, out) = cli(&cluster, "pg-2", &["switchover", "--to", "pg-3"]);
    assert!(!ok && out.contains("not the primary"), "{out}");
    let writers: Vec<Writer> = cluster
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            Writer::start(inst.run_dir(), inst.pg_port, "probe", (i as i64 + 1) << 32, Duration::from_millis(20))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out) = cli(&cluster, "pg-1", &["switchover", "--to", "pg-3"]);
    assert!(ok, "switchover failed: {out}");
    assert_eq!(cluster.wait_primary(&all, Duration::from_secs(60)).await, "pg-3");
    let lease = cluster.lease().unwrap();
    assert_eq!((lease.holder.as_deref(), lease.transitions), (Some("pg-3"), 2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acks = Vec::new();
    let mut per: Vec<Vec<instance_manager::testkit::Ack>> = Vec::new();
    for w in writers {
        let a = w.stop().await;
        per.push(a.clone());
        acks.extend(a);
    }
    // One writer at a time: pg-1's last acknowledged commit precedes pg-3's first.
    let last_old = per[0].last().map(|a| a.at).expect("pg-1 acknowledged writes before");
    let first_new = per[2].first().map(|a| a.at).expect("pg-3 acknowledged writes after");
    assert!(last_old < first_new, "pg-1 acknowledged a commit after pg-3's first");
    assert!(per[1].is_empty(), "pg-2 was never primary");
    let gap = longest_gap(&mut acks);
    eprintln!("switchover write gap: {gap:?}");
    assert!(gap < Duration::from_secs(10), "writes stopped for {gap:?}");
    // The old primary follows without a new timeline fork of its own.
    wait_for("pg-1 replica on timeline 2", Duration::from_secs(60), || async {
        let st = cluster.get("pg-1").status().await?;
        if st.role == "replica" && st.timeline == Some(2) {
            Ok(())
        } else {
            Err(format!("{} {:?}", st.role, st.timeline))
        }
    })
    .await;
    let t = cluster.get("pg-3").status().await.unwrap().lease.and_then(|l| l.last_transition).expect("transition");
    assert_eq!((t.kind.as_str(), t.from.as_deref()), ("switchover", Some("pg-1")), "{t:?}");

    // Without a target the best replica is chosen.
    let (ok, out) = cli(&cluster, "pg-3", &["switchover"]);
    assert!(ok, "switchover failed: {out}");
    let new = cluster.wait_primary(&all, Duration::from_secs(60)).await;
    assert_ne!(new, "pg-3");
    assert_eq!(cluster.lease().unwrap().transitions, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_primary_hands_over_before_exiting() {
    let mut cluster = TestCluster::start(3, FAST);
    let all = ["pg-1", "pg-2", "pg-3"];
    assert_eq!(cluster.wait_primary(&all, BOOT).await, "pg-1");
    cluster.get("pg-1").signal(Signal::SIGTERM);
    let code = cluster.get_mut("pg-1").wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(0), "{}", cluster.get("pg-1").log_tail(30));
    // The lease was handed over, not left to expire.
    let lease = cluster.lease().unwrap();
    assert!(lease.holder.as_deref().is_some_and(|h| h != "pg-1"), "{lease:?}");
    let new = cluster.wait_primary(&["pg-2", "pg-3"], Duration::from_secs(30)).await;
    assert_eq!(lease.holder.as_deref(), Some(new.as_str()));
    // Once the lease is handed over, the old primary never decides to run as the primary again
    // (a renew of the handover, remembered past it, once made it start Postgres as primary).
    let log = cluster.get("pg-1").log();
    let after = log.split("switchover: lease handed over").nth(1).expect("the handover is logged");
    assert!(!after.contains("as the primary"), "pg-1 after handing the lease over:\n{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_and_unfence_a_primary() {
    let cluster = TestCluster::start(2, FAST);
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2"], BOOT).await, "pg-1");
    let (ok, out) = cli(&cluster, "pg-1", &["fence"]);
    assert!(ok, "{out}");
    // A fenced primary stops and gives its lease up: pg-2 takes over without waiting for expiry.
    assert_eq!(cluster.wait_primary(&["pg-2"], Duration::from_secs(30)).await, "pg-2");
    let st = cluster.get("pg-1").status().await.unwrap();
    assert!(st.fenced && st.role == "fenced", "{st:?}");
    let (ok, out) = cli(&cluster, "pg-1", &["unfence"]);
    assert!(ok, "{out}");
    wait_for("pg-1 back as a replica", Duration::from_secs(60), || async {
        let st = cluster.get("pg-1").status().await?;
        if st.role == "replica" && !st.fenced { Ok(()) } else { Err(st.role.to_string()) }
    })
    .await;
    // promote on a replica is refused while a live primary holds the lease.
    let (ok, out) = cli(&cluster, "pg-1", &["promote"]);
    assert!(!ok && out.contains("a live primary (pg-2) holds the lease"), "{out}");
}
