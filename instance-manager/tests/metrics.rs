#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The metrics endpoint of real instances: every family is there and its values move (the
//! archiver counts grow after WAL switches, replication lag appears while a standby's replay
//! is paused, a backup shows up, the role flips after a switchover); a bad custom queries
//! file is refused naming its query and column; a slow or failing custom query never makes
//! a scrape miss its deadline nor slows the API; a metrics port that cannot be bound does
//! not stop the manager.

use std::path::Path;
use std::time::{Duration, Instant};

use instance_manager::cli::{ApiClient, ApiTarget};
use instance_manager::testkit::{FAST, InstanceOptions, TestCluster, TestDir, TestInstance, manager_binary, wait_for};

const READY: Duration = Duration::from_secs(90);

/// One sample of the exposition: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the Prometheus text format (what this endpoint writes: no timestamps).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}').expect("closing brace"))),
        };
        out.push(Sample { name, labels, value });
    }
    out
}

fn parse_labels(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.push((key.to_string(), value));
        s = rest[end + 1..].trim_start_matches(',');
    }
    out
}

/// The value of the sample `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && want.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
}

fn must(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    value(samples, name, want).unwrap_or_else(|| {
        let near: Vec<String> =
            samples.iter().filter(|s| s.name == name).map(|s| format!("{:?} {}", s.labels, s.value)).collect();
        panic!("no {name}{want:?}; samples of that name: {near:?}")
    })
}

/// Scrapes until `check` accepts the samples.
async fn wait_metrics<T>(
    inst: &TestInstance,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[Sample]) -> Result<T, String>,
) -> T {
    wait_for(&format!("{what} on {}", inst.name), timeout, || async {
        let text = inst.scrape().await?;
        check(&samples(&text))
    })
    .await
}

fn local(inst: &TestInstance) -> ApiClient {
    inst.socket_client(Duration::from_secs(120))
}

fn write_queries(dir: &Path, text: &str) -> std::path::PathBuf {
    let file = dir.join("queries.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

const GOOD_QUERY: &str = "\
app_rows:
  query: SELECT current_database() AS datname, 42 AS answer, 'on' AS state
  metrics:
    - datname: {usage: LABEL, description: Database}
    - answer: {usage: GAUGE, description: The answer}
    - state: {usage: MAPPEDMETRIC, metric_mapping: {'on': 1, 'off': 0}, description: State}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_replica_export_every_family_and_values_move() {
    let root = TestDir::new();
    let store = root.path().join("archive");
    let queries = write_queries(root.path(), GOOD_QUERY);
    let mut opts = InstanceOptions::primary("pg-1");
    opts.extra_yaml = format!("backup:\n  store:\n    destination: file://{}\n", store.display());
    opts.metrics_yaml = format!("  queriesFile: {}\n", queries.display());
    let primary = TestInstance::start(root.path(), &opts);
    primary.wait_ready(READY).await;
    let replica = TestInstance::start(root.path(), &InstanceOptions::replica_of("pg-2", &primary));
    replica.wait_ready(READY).await;

    // Every family on the primary, once the replica streams.
    let s = wait_metrics(&primary, "a streaming standby", Duration::from_secs(30), |s| {
        match value(s, "cnpg_pg_replication_streaming_replicas", &[]) {
            Some(n) if n >= 1.0 => Ok(s.to_vec()),
            other => Err(format!("streaming_replicas {other:?}")),
        }
    })
    .await;
    assert_eq!(must(&s, "cnpg_collector_up", &[("cluster", "test")]), 1.0);
    assert_eq!(must(&s, "cnpg_collector_last_collection_error", &[]), 0.0);
    assert!(must(&s, "cnpg_backends_total", &[("usename", "postgres")]) >= 1.0);
    assert!(must(&s, "cnpg_pg_database_size_bytes", &[("datname", "app")]) > 1e6);
    assert!(must(&s, "cnpg_pg_database_xid_age", &[("datname", "postgres")]) >= 0.0);
    assert_eq!(must(&s, "cnpg_pg_replication_in_recovery", &[]), 0.0);
    assert_eq!(must(&s, "cnpg_pg_replication_lag", &[]), 0.0);
    assert!(must(&s, "cnpg_pg_stat_replication_replay_diff_bytes", &[("application_name", "pg-2")]) >= 0.0);
    must(&s, "cnpg_pg_stat_replication_replay_lag_seconds", &[("application_name", "pg-2")]);
    must(&s, "cnpg_pg_stat_bgwriter_checkpoints_timed", &[]);
    must(&s, "cnpg_pg_stat_database_xact_commit", &[("datname", "app")]);
    assert!(must(&s, "cnpg_collector_wal_bytes", &[]) > 0.0);
    assert!(must(&s, "cnpg_pg_settings_setting", &[("name", "max_connections")]) >= 10.0);
    assert_eq!(must(&s, "cnpg_collector_postgres_version", &[("cluster", "test")]).floor(), 15.0);
    assert!(must(&s, "cnpg_collector_pg_wal", &[("value", "count")]) >= 1.0);
    must(&s, "cnpg_collector_pg_wal_archive_status", &[("value", "ready")]);
    assert!(must(&s, "pgwarden_pg_wal_current_lsn_bytes", &[]) > 0.0);
    must(&s, "pgwarden_pg_locks_granted", &[("mode", "AccessShareLock")]);
    must(&s, "pgwarden_pg_xact_oldest_seconds", &[("datname", "app")]);
    assert_eq!(must(&s, "pgwarden_instance_role", &[("role", "primary")]), 1.0);
    assert_eq!(must(&s, "pgwarden_instance_role", &[("role", "replica")]), 0.0);
    must(&s, "pgwarden_build_info", &[("instance", "pg-1"), ("cluster", "test")]);
    assert_eq!(must(&s, "pgwarden_postgres_restarts_total", &[]), 0.0);
    assert!(must(&s, "process_resident_memory_bytes", &[]) > 1e6);
    assert_eq!(must(&s, "cnpg_app_rows_answer", &[("datname", "postgres")]), 42.0);
    assert_eq!(must(&s, "cnpg_app_rows_state", &[("datname", "postgres")]), 1.0);
    assert_eq!(must(&s, "pgwarden_query_errors_total", &[("query", "app_rows")]), 0.0);
    assert!(value(&s, "pgwarden_pg_wal_replay_lag_bytes", &[]).is_none(), "a primary has no replay lag");
    assert!(value(&s, "pgwarden_lease_held", &[]).is_none(), "no lease is configured");

    // The archiver: Postgres' counts and the manager's grow with WAL switches.
    let before_pg = must(&s, "cnpg_pg_stat_archiver_archived_count", &[]);
    let before_ours = must(&s, "pgwarden_wal_archive_archived_total", &[]);
    let c = primary.connect("app").await.unwrap();
    c.batch_execute("CREATE TABLE filler (pad text)").await.unwrap();
    for _ in 0..3 {
        c.batch_execute("INSERT INTO filler SELECT repeat('x', 200) FROM generate_series(1, 200)").await.unwrap();
        c.query_one("SELECT pg_switch_wal()", &[]).await.unwrap();
    }
    wait_metrics(&primary, "3 more WAL files archived", Duration::from_secs(60), |s| {
        let pg = value(s, "cnpg_pg_stat_archiver_archived_count", &[]).unwrap_or(0.0);
        let ours = value(s, "pgwarden_wal_archive_archived_total", &[]).unwrap_or(0.0);
        let age = value(s, "cnpg_pg_stat_archiver_seconds_since_last_archival", &[]).unwrap_or(-1.0);
        let last = value(s, "pgwarden_wal_archive_last_archived_age_seconds", &[]);
        if pg >= before_pg + 3.0 && ours >= before_ours + 3.0 && (0.0..120.0).contains(&age) && last.is_some() {
            Ok(())
        } else {
            Err(format!(
                "archived_count {pg} (was {before_pg}), ours {ours} (was {before_ours}), age {age}, last {last:?}"
            ))
        }
    })
    .await;

    // The replica: its role, its receiver, its positions.
    let r = replica.scrape().await.unwrap();
    let r = samples(&r);
    assert_eq!(must(&r, "pgwarden_instance_role", &[("role", "replica")]), 1.0);
    assert_eq!(must(&r, "cnpg_collector_last_collection_error", &[]), 0.0, "every built-in query runs on a standby");
    assert_eq!(must(&r, "cnpg_pg_replication_in_recovery", &[]), 1.0);
    assert_eq!(must(&r, "cnpg_pg_replication_is_wal_receiver_up", &[]), 1.0);
    assert!(must(&r, "pgwarden_pg_wal_received_lsn_bytes", &[]) > 0.0);
    assert!(value(&r, "cnpg_pg_stat_replication_replay_diff_bytes", &[]).is_none(), "primary-only query on a standby");
    assert!(value(&r, "cnpg_collector_sync_replicas", &[("value", "observed")]).is_none());

    // Lag appears while the standby's replay is paused, and goes when it resumes.
    let rc = replica.connect("postgres").await.unwrap();
    rc.query_one("SELECT pg_wal_replay_pause()", &[]).await.unwrap();
    c.batch_execute("INSERT INTO filler SELECT repeat('y', 500) FROM generate_series(1, 2000)").await.unwrap();
    wait_metrics(&replica, "replay lag while paused", Duration::from_secs(30), |s| {
        let bytes = value(s, "pgwarden_pg_wal_replay_lag_bytes", &[]).unwrap_or(0.0);
        let secs = value(s, "cnpg_pg_replication_lag", &[]).unwrap_or(0.0);
        if bytes > 0.0 && secs > 0.0 { Ok(()) } else { Err(format!("lag {bytes} bytes, {secs} s")) }
    })
    .await;
    wait_metrics(&primary, "replay lag of pg-2", Duration::from_secs(30), |s| {
        match value(s, "cnpg_pg_stat_replication_replay_diff_bytes", &[("application_name", "pg-2")]) {
            Some(b) if b > 0.0 => Ok(()),
            other => Err(format!("replay_diff_bytes {other:?}")),
        }
    })
    .await;
    rc.query_one("SELECT pg_wal_replay_resume()", &[]).await.unwrap();
    wait_metrics(&replica, "no lag after resuming", Duration::from_secs(30), |s| {
        match value(s, "pgwarden_pg_wal_replay_lag_bytes", &[]) {
            Some(0.0) => Ok(()),
            other => Err(format!("lag {other:?}")),
        }
    })
    .await;

    // A base backup shows in the collector's and the manager's figures.
    let s = samples(&primary.scrape().await.unwrap());
    assert_eq!(must(&s, "cnpg_collector_last_available_backup_timestamp", &[]), 0.0);
    local(&primary).post_json::<_, serde_json::Value>("/backup", &serde_json::json!({}), None).await.expect("backup");
    wait_metrics(&primary, "the backup", Duration::from_secs(60), |s| {
        let ts = value(s, "cnpg_collector_last_available_backup_timestamp", &[]).unwrap_or(0.0);
        let first = value(s, "cnpg_collector_first_recoverability_point", &[]).unwrap_or(0.0);
        let size = value(s, "pgwarden_backup_last_size_bytes", &[]).unwrap_or(0.0);
        let running = value(s, "pgwarden_backup_running", &[]).unwrap_or(1.0);
        let now = jiff::Timestamp::now().as_second() as f64;
        if (now - ts).abs() < 300.0 && first > 0.0 && size > 1e6 && running == 0.0 {
            Ok(())
        } else {
            Err(format!("last {ts}, first {first}, size {size}, running {running}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_queries_file_is_refused_naming_query_and_column() {
    let d = TestDir::new();
    let queries = write_queries(
        d.path(),
        "pg_things:\n  query: SELECT 1 AS n, 2 AS m\n  metrics:\n    - n: {usage: GAUGE}\n    - m: {usage: HISTOGRAM}\nother:\n  query: ''\n  metrics: []\n",
    );
    let cfg = d.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "name: pg-1\ndataDir: {0}/pgdata\nrunDir: {0}/run\nmetrics:\n  queriesFile: {1}\n",
            d.path().display(),
            queries.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(manager_binary())
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("POD_NAME")
        .env_remove("CLUSTER_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for want in [
        "metrics.queriesFile:",
        "query pg_things, column m: usage HISTOGRAM is not supported",
        "query other: query is empty",
        "query other: metrics is empty",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(!d.path().join("pgdata").exists(), "nothing is created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_failing_queries_never_hold_a_scrape_or_the_api() {
    let root = TestDir::new();
    let queries = write_queries(
        root.path(),
        &format!(
            "{GOOD_QUERY}slow:\n  query: SELECT pg_sleep(30) IS NULL AS slept\n  metrics:\n    - slept: {{usage: GAUGE}}\n\
             broken:\n  query: SELECT no_such_column FROM pg_class\n  metrics:\n    - no_such_column: {{usage: GAUGE}}\n\
             capped:\n  timeout_seconds: 0.2\n  query: SELECT pg_sleep(5) IS NULL AS slept\n  metrics:\n    - slept: {{usage: GAUGE}}\n"
        ),
    );
    let mut opts = InstanceOptions::primary("pg-1");
    opts.metrics_yaml = format!("  queriesFile: {}\n  timeoutSeconds: 2\n", queries.display());
    let pg = TestInstance::start(root.path(), &opts);
    pg.wait_ready(READY).await;

    for round in 1..=2 {
        // The API answers at once while a scrape waits for the slow query.
        let scrape = {
            let url = pg.metrics_url.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let target = ApiTarget::parse(&url).unwrap();
                let (code, body) = ApiClient::new(target).get_raw("/metrics").await.unwrap();
                (code, String::from_utf8_lossy(&body).into_owned(), t.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        let t = Instant::now();
        let st = pg.status().await.unwrap();
        assert_eq!(st.role, "primary");
        assert!(t.elapsed() < Duration::from_secs(1), "/status took {:?} during a slow scrape", t.elapsed());
        let (code, body, took) = scrape.await.unwrap();
        assert_eq!(code, 200);
        assert!(took < Duration::from_millis(2500), "round {round}: the scrape took {took:?} with a 2 s deadline");
        let s = samples(&body);
        assert_eq!(must(&s, "cnpg_collector_up", &[]), 1.0);
        assert_eq!(must(&s, "cnpg_app_rows_answer", &[]), 42.0, "queries before the slow one ran");
        must(&s, "cnpg_backends_total", &[]);
        assert!(value(&s, "cnpg_slow_slept", &[]).is_none() && value(&s, "cnpg_broken_no_such_column", &[]).is_none());
        for q in ["slow", "broken"] {
            assert_eq!(must(&s, "pgwarden_query_errors_total", &[("query", q)]), f64::from(round), "{q}");
            assert_eq!(must(&s, "pgwarden_query_last_run_failed", &[("query", q)]), 1.0, "{q}");
        }
        assert_eq!(must(&s, "pgwarden_query_last_run_failed", &[("query", "app_rows")]), 0.0);
        // `capped` runs after `broken` and before `slow` (alphabetical order): its own cap.
        assert_eq!(must(&s, "pgwarden_query_errors_total", &[("query", "capped")]), f64::from(round));
        assert!(must(&s, "pgwarden_query_duration_seconds", &[("query", "capped")]) < 0.6);
        assert!(must(&s, "cnpg_collector_collection_errors_total", &[("collector", "Collect.cnpg")]) >= 3.0);
        assert_eq!(must(&s, "cnpg_collector_last_collection_error", &[]), 1.0);
    }
    // The abandoned queries were cancelled, not left running.
    let c = pg.connect("postgres").await.unwrap();
    wait_for("no pg_sleep left running", Duration::from_secs(5), || async {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if n == 0 { Ok(()) } else { Err(format!("{n} still sleeping")) }
    })
    .await;
    let log = pg.log();
    assert!(
        log.contains("metrics query failed") && log.contains("column \\\"no_such_column\\\" does not exist"),
        "log:\n{}",
        pg.log_tail(20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_in_use_does_not_stop_the_manager() {
    let root = TestDir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut opts = InstanceOptions::primary("pg-1");
    opts.metrics_yaml = format!("  listen: 127.0.0.1:{port}\n");
    let pg = TestInstance::start(root.path(), &opts);
    pg.wait_ready(READY).await;
    assert!(pg.log().contains("cannot listen for metrics"), "log:\n{}", pg.log_tail(30));
    assert_eq!(pg.status().await.unwrap().role, "primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_flips_after_a_switchover() {
    let cluster = TestCluster::start(2, FAST);
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2"], READY).await, "pg-1");
    let (p1, p2) = (cluster.get("pg-1"), cluster.get("pg-2"));
    let s = wait_metrics(p1, "a renewed lease", Duration::from_secs(30), |s| {
        match value(s, "pgwarden_lease_renewals_total", &[]) {
            Some(n) if n >= 1.0 => Ok(s.to_vec()),
            other => Err(format!("renewals {other:?}")),
        }
    })
    .await;
    assert_eq!(must(&s, "pgwarden_instance_role", &[("role", "primary")]), 1.0);
    assert_eq!(must(&s, "pgwarden_lease_held", &[]), 1.0);
    assert_eq!(must(&s, "pgwarden_lease_holder", &[("holder", "pg-1")]), 1.0);
    assert_eq!(must(&s, "pgwarden_primary_transitions_total", &[("kind", "bootstrap")]), 1.0);
    let term = must(&s, "pgwarden_lease_term", &[]);
    let r = samples(&p2.scrape().await.unwrap());
    assert_eq!(must(&r, "pgwarden_instance_role", &[("role", "replica")]), 1.0);
    assert_eq!(must(&r, "pgwarden_lease_held", &[]), 0.0);

    let out = std::process::Command::new(manager_binary())
        .arg("--api")
        .arg(p1.socket_url())
        .args(["switchover", "--to", "pg-2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchover: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cluster.wait_primary(&["pg-1", "pg-2"], Duration::from_secs(60)).await, "pg-2");
    wait_metrics(p2, "pg-2 primary after the switchover", Duration::from_secs(30), |s| {
        let primary = value(s, "pgwarden_instance_role", &[("role", "primary")]);
        let switchovers = value(s, "pgwarden_primary_transitions_total", &[("kind", "switchover")]);
        let took = value(s, "pgwarden_primary_transition_last_duration_seconds", &[("kind", "switchover")]);
        let new_term = value(s, "pgwarden_lease_term", &[]);
        match (primary, switchovers, took, new_term) {
            (Some(1.0), Some(1.0), Some(t), Some(n)) if t > 0.0 && t < 30.0 && n > term => Ok(()),
            other => Err(format!("role, switchovers, duration, term: {other:?}")),
        }
    })
    .await;
    wait_metrics(p1, "pg-1 replica after the switchover", Duration::from_secs(60), |s| {
        match value(s, "pgwarden_instance_role", &[("role", "replica")]) {
            Some(1.0) => Ok(()),
            other => Err(format!("replica {other:?}")),
        }
    })
    .await;
}
