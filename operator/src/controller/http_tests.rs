//! The probe verdicts, then the endpoints over real HTTP on 127.0.0.1.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::controller::leader::Loss;
use crate::reconcile::Observer;

fn snapshot(election: Election, ticked_at: Instant) -> Snapshot {
    Snapshot { election, ticked_at }
}

fn candidate(holder: Option<&str>) -> Election {
    Election::Candidate { holder: holder.map(str::to_owned) }
}

#[test]
fn liveness_fails_once_the_election_loop_stops_ticking() {
    let t0 = Instant::now();
    let stale = Duration::from_secs(30);
    let s = snapshot(Election::Leader, t0);
    assert!(liveness(&s, stale, t0 + Duration::from_secs(30)).ok);
    let late = liveness(&s, stale, t0 + Duration::from_secs(31));
    assert!(!late.ok);
    assert!(late.message.contains("has not ticked for 31s"), "{}", late.message);
    let ended = snapshot(Election::Ended(End::Released), t0);
    assert!(liveness(&ended, stale, t0 + Duration::from_secs(300)).ok, "an ended election is an exiting process");
}

#[test]
fn readiness_says_whether_this_replica_leads_or_stands_by() {
    let now = Instant::now();
    let standby = readiness(&snapshot(candidate(Some("operator-b")), now), false, false);
    assert_eq!(standby, Probe::ok("ready: standby, waiting for the leader lease (held by operator-b)"));
    assert!(readiness(&snapshot(candidate(None), now), false, false).ok);

    let syncing = readiness(&snapshot(Election::Leader, now), false, false);
    assert!(
        !syncing.ok && syncing.message.contains("waiting for the PostgresCluster and PostgresBackup watches"),
        "{syncing:?}"
    );
    let synced = readiness(&snapshot(Election::Leader, now), true, false);
    assert!(synced.ok && synced.message.starts_with("ready: leader"), "{synced:?}");

    let stopping = readiness(&snapshot(Election::Leader, now), true, true);
    assert_eq!(stopping, Probe::failing("not ready: shutting down"));
    let lost = readiness(&snapshot(Election::Ended(End::Lost(Loss::Conflict)), now), true, false);
    assert!(!lost.ok && lost.message.contains("lost the leader lease"), "{lost:?}");
}

/// Sends `GET path` and returns the status code and the whole response (head and body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange).await.expect("no answer within 5 s");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

struct Server {
    addr: std::net::SocketAddr,
    election: watch::Sender<Snapshot>,
    synced: watch::Sender<bool>,
    stopping: CancellationToken,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn server() -> Server {
    let (election, election_rx) = watch::channel(snapshot(candidate(None), Instant::now()));
    let (synced, synced_rx) = watch::channel(false);
    let stopping = CancellationToken::new();
    let health = Health {
        election: election_rx,
        synced: synced_rx,
        stopping: stopping.clone(),
        stale_after: Duration::from_secs(30),
    };
    let metrics = Arc::new(Metrics::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, router(health, metrics.clone()), stop.clone()));
    Server { addr, election, synced, stopping, metrics, stop, task }
}

#[tokio::test]
async fn the_probes_follow_the_election_over_http() {
    let s = server().await;
    let (status, body) = get(s.addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");

    s.election.send_replace(snapshot(candidate(Some("operator-b")), Instant::now()));
    let (status, body) = get(s.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("ready: standby, waiting for the leader lease (held by operator-b)\n"), "{body}");

    s.election.send_replace(snapshot(Election::Leader, Instant::now()));
    let (status, body) = get(s.addr, "/readyz").await;
    assert_eq!(status, 503, "a leader that has not synced is not ready: {body}");
    s.synced.send_replace(true);
    let (status, body) = get(s.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    s.stopping.cancel();
    let (status, body) = get(s.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");

    let stale = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
    s.election.send_replace(snapshot(Election::Leader, stale));
    let (status, body) = get(s.addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");

    s.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), s.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics_text() {
    let s = server().await;
    s.metrics.reconciled(Duration::from_millis(20), Some("kube"));
    s.metrics.phase("db", "pg", "Cluster in healthy state");
    s.metrics.set_leader(true);
    let (status, body) = get(s.addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.to_lowercase().contains("content-type: application/openmetrics-text; version=1.0.0"), "{body}");
    for line in [
        "pgwarden_operator_reconciles_total 1",
        "pgwarden_operator_reconcile_errors_total{kind=\"kube\"} 1",
        "pgwarden_operator_clusters{phase=\"Cluster in healthy state\"} 1",
        "pgwarden_operator_leader 1",
        "# EOF",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
    let (status, _) = get(s.addr, "/nothing-here").await;
    assert_eq!(status, 404);
    s.stop.cancel();
}
