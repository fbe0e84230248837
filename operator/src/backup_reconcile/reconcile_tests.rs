//! The backup reconcile against the scripted API server ([`FakeApi`]) and scripted instances:
//! a backup asked once and followed to `Completed`; the request written before it is sent; a
//! lost answer looked up, not asked again; a stale copy of the object asks nothing; a backup
//! without a primary fails at its deadline; a failover during a backup fails it; a final
//! backup costs nothing.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{BackupContext, FOLLOW, FOLLOW_FOR, POLL, next_look, reconcile};
use crate::build::golden_tests::sample;
use crate::build::{self, Cluster};
use crate::crd::{BackupPhase, PostgresBackup, PostgresBackupStatus, PostgresCluster};
use crate::instances::instances_tests::REPLICA_STATUS;
use crate::instances::{Answer, ControlError, Target};
use crate::reconcile::act::InstanceApi;
use crate::testkit::{DEFAULT_NOW, FakeApi, ResourceType};

/// Instances answering from a script keyed by `(instance, "GET /status")`; every call is
/// recorded. Unscripted calls get no answer.
#[derive(Default)]
struct Instances {
    calls: Mutex<Vec<String>>,
    answers: Mutex<BTreeMap<(String, String), Result<Answer, String>>>,
}

impl Instances {
    /// `instance` answers `call` with `status` and `body`.
    fn answer(&self, instance: &str, call: &str, status: u16, body: Value) {
        let answer = Answer { status: http::StatusCode::from_u16(status).expect("a status"), body };
        self.script(instance, call, Ok(answer));
    }

    fn script(&self, instance: &str, call: &str, answer: Result<Answer, String>) {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner).insert((instance.into(), call.into()), answer);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn posts(&self) -> usize {
        self.calls().iter().filter(|c| c.contains("POST")).count()
    }

    fn respond(&self, target: &Target, call: String) -> Result<Answer, String> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(format!("{} {call}", target.name));
        let scripted =
            self.answers.lock().unwrap_or_else(PoisonError::into_inner).get(&(target.name.clone(), call)).cloned();
        scripted.unwrap_or_else(|| Err("connect: no route to host".into()))
    }
}

impl InstanceApi for Instances {
    fn post<'a>(
        &'a self,
        _: &'a Target,
        path: &'a str,
        _: Value,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ControlError>> + Send + 'a>> {
        panic!("the backup reconcile calls request, not post ({path})")
    }

    fn request<'a>(
        &'a self,
        target: &'a Target,
        method: http::Method,
        path: &'a str,
        body: Option<Value>,
        _: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>> {
        if method == http::Method::POST {
            assert_eq!(body, Some(json!({"fromStandby": false, "wait": false})), "a primary backup, not waited for");
        }
        let answer = self.respond(target, format!("{method} {path}"));
        Box::pin(async move { answer })
    }
}

/// The test's world: the API server, the instances, the clock.
struct World {
    api: FakeApi,
    instances: Arc<Instances>,
    now: Arc<Mutex<Timestamp>>,
}

impl World {
    /// The cluster `backed-up` (a backup store, 3 instances) with its Secrets and Pods (IPs
    /// 10.0.0.N), `backed-up-1` holding the Lease, and the PostgresBackup `on-demand`.
    fn new() -> Self {
        let world = Self::without_cluster();
        world.cluster("backup-s3");
        world.set_holder(Some("backed-up-1"));
        world
    }

    fn without_cluster() -> Self {
        let api = FakeApi::new();
        api.register(ResourceType::of::<PostgresBackup>().with_status());
        let backup: PostgresBackup = serde_json::from_value(json!({
            "apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresBackup",
            "metadata": {"name": "on-demand", "namespace": "db"},
            "spec": {"cluster": {"name": "backed-up"}}
        }))
        .expect("a backup");
        api.insert(&backup);
        let now = DEFAULT_NOW.parse::<Timestamp>().expect("a time").checked_add(SignedDuration::from_secs(10));
        Self { api, instances: Arc::default(), now: Arc::new(Mutex::new(now.expect("in range"))) }
    }

    fn cluster(&self, sample_name: &str) {
        let mut c = sample(sample_name);
        c.metadata.uid = None;
        self.api.insert(&c);
        let c = self.api.get_as::<PostgresCluster>("db", &c.name_any()).expect("stored");
        let cluster = Cluster::new(&c).expect("a cluster");
        let generated = crate::generate::generate(&cluster.names, Timestamp::now()).expect("credentials");
        for s in build::secrets::all(&cluster, &generated) {
            self.api.insert(&s);
        }
        for (k, mut pod) in build::desired(&cluster).expect("objects").pods.into_iter().enumerate() {
            pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
                pod_ip: Some(format!("10.0.0.{}", k + 1)),
                ..Default::default()
            });
            self.api.insert(&pod);
        }
    }

    fn set_holder(&self, holder: Option<&str>) {
        let lease: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "backed-up-primary", "namespace": "db"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}
        }))
        .expect("a lease");
        self.api.insert(&lease);
    }

    /// `instance`'s `/status`: a primary (or not), running `running`, its last failure.
    fn status(&self, instance: &str, primary: bool, running: Option<&str>, failure: Option<(&str, &str)>) {
        let mut status: Value = serde_json::from_str(REPLICA_STATUS).expect("a status");
        status["name"] = json!(instance);
        status["in_recovery"] = json!(!primary);
        status["role"] = json!(if primary { "primary" } else { "replica" });
        status["backup"] = json!({
            "last_backup": null, "running": running, "retention_error": null, "next_scheduled_at": null,
            "last_failure": failure.map(|f| f.0), "last_failed_at": failure.map(|f| f.1),
        });
        self.instances.answer(instance, "GET /status", 200, status);
    }

    fn catalog(&self, instance: &str, ids: &[(&str, &str)]) {
        let backups: Vec<Value> = ids.iter().map(|(id, started)| listed(id, instance, started)).collect();
        let list = json!({"destination": "s3://backups/pgwarden/backed-up", "retention": null, "backups": backups});
        self.instances.answer(instance, "GET /backups", 200, list);
    }

    fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(by).expect("in range");
    }

    fn context(&self) -> Arc<BackupContext> {
        let mut ctx = BackupContext::new(self.api.client());
        ctx.instance_api = self.instances.clone();
        let now = self.now.clone();
        ctx.clock = Arc::new(move || *now.lock().unwrap_or_else(PoisonError::into_inner));
        Arc::new(ctx)
    }

    fn backup(&self) -> PostgresBackup {
        self.api.get_as::<PostgresBackup>("db", "on-demand").expect("the backup")
    }

    fn status_now(&self) -> PostgresBackupStatus {
        self.backup().status.unwrap_or_default()
    }

    async fn pass(&self) -> Action {
        reconcile(Arc::new(self.backup()), self.context()).await.expect("a pass")
    }

    fn events(&self) -> Vec<String> {
        self.api
            .writes()
            .iter()
            .filter(|w| w.plural.as_deref() == Some("events"))
            .filter_map(|w| w.body.as_ref().map(|b| b["reason"].as_str().unwrap_or_default().to_owned()))
            .collect()
    }
}

/// A catalog entry (`GET /backups`) of `instance`, begun at `started`.
fn listed(id: &str, instance: &str, started: &str) -> Value {
    let stopped: Timestamp =
        started.parse::<Timestamp>().expect("a time").checked_add(SignedDuration::from_secs(30)).expect("in range");
    json!({
        "id": id, "cluster": "backed-up", "instance": instance, "fromStandby": false,
        "systemIdentifier": "7300000000000000001", "postgresVersion": "15.18", "postgresVersionNum": 150018,
        "timeline": 1, "segmentSize": 16777216, "startLsn": "0/5000028", "stopLsn": "0/5000138",
        "startWal": "000000010000000000000005", "stopWal": "000000010000000000000005",
        "startedAt": started, "stoppedAt": stopped.to_string(), "compression": "zstd", "files": [],
        "dataBytes": 31000000, "storedBytes": 4200000, "checksumFailures": 0
    })
}

#[tokio::test]
async fn a_backup_is_asked_of_the_primary_once_and_followed_to_completed() {
    let w = World::new();
    w.status("backed-up-1", true, None, None);
    w.instances.answer("backed-up-1", "POST /backup", 202, json!({"id": "20260101T000010Z"}));

    let action = w.pass().await;
    assert_eq!(action, Action::requeue(FOLLOW), "a backup that just started is followed closely");
    assert_eq!(w.instances.posts(), 1);
    let s = w.status_now();
    assert_eq!((s.phase, s.backup_id.as_deref()), (Some(BackupPhase::Started), Some("20260101T000010Z")));
    let asked = s.instance_id.clone().expect("the instance asked");
    assert_eq!(asked.pod_name, "backed-up-1");
    let pod = w.api.get_as::<Pod>("db", "backed-up-1").expect("the pod");
    assert_eq!(asked.pod_uid, pod.metadata.uid, "the Pod's uid is on record");
    // Written before the request: Started without an id; then the id.
    let writes: Vec<Value> = w.api.writes_to("postgresbackups").iter().filter_map(|r| r.body.clone()).collect();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(writes[0]["status"]["phase"], "Started");
    assert!(writes[0]["status"].get("backupId").is_none(), "{:#?}", writes[0]);
    assert!(writes[0]["metadata"]["resourceVersion"].is_string(), "conditional on what was read");
    assert_eq!(writes[1]["status"]["backupId"], "20260101T000010Z");
    assert_eq!(w.events(), ["BackupStarted"]);

    // Running: nothing is asked, nothing written.
    w.status("backed-up-1", true, Some("20260101T000010Z"), None);
    w.catalog("backed-up-1", &[]);
    w.api.clear_log();
    w.pass().await;
    assert_eq!(w.instances.posts(), 1);
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());

    // Done: listed in the catalog.
    w.status("backed-up-1", true, None, None);
    w.catalog("backed-up-1", &[("20260101T000010Z", "2026-01-01T00:00:10Z")]);
    let action = w.pass().await;
    assert_eq!(action, Action::await_change(), "a final backup is not looked at again");
    let s = w.status_now();
    assert_eq!(s.phase, Some(BackupPhase::Completed));
    assert_eq!((s.begin_lsn.as_deref(), s.end_lsn.as_deref()), (Some("0/5000028"), Some("0/5000138")));
    assert_eq!(s.stopped_at.as_deref(), Some("2026-01-01T00:00:40Z"));
    assert_eq!((s.size_bytes, s.stored_bytes), (Some(31_000_000), Some(4_200_000)));
    assert_eq!(s.destination_path.as_deref(), Some("s3://backups/pgwarden/backed-up"));
    assert_eq!(w.events(), ["BackupCompleted"]);
    let calls = w.instances.calls();
    let status_then_catalog: Vec<&String> = calls.iter().rev().take(2).collect();
    assert_eq!(
        status_then_catalog,
        ["backed-up-1 GET /backups", "backed-up-1 GET /status"],
        "the status is read first"
    );

    // Final: not even read.
    w.api.clear_log();
    let before = w.instances.calls().len();
    w.pass().await;
    assert!(w.api.requests().is_empty() && w.instances.calls().len() == before, "{:#?}", w.api.requests());
}

#[tokio::test]
async fn a_lost_answer_is_looked_up_on_the_instance_not_asked_again() {
    let w = World::new();
    w.status("backed-up-1", true, None, None);
    w.instances.script("backed-up-1", "POST /backup", Err("10.0.0.1:8000 did not answer within 30s".into()));
    w.pass().await;
    let s = w.status_now();
    assert_eq!((s.phase, s.backup_id.clone()), (Some(BackupPhase::Started), None));
    assert!(s.message.as_deref().is_some_and(|m| m.contains("got no answer")), "{s:?}");

    // The request had arrived: the instance runs it. Adopted; not asked again.
    w.status("backed-up-1", true, Some("20260101T000010Z"), None);
    w.catalog("backed-up-1", &[]);
    w.pass().await;
    assert_eq!(w.instances.posts(), 1, "{:?}", w.instances.calls());
    assert_eq!(w.status_now().backup_id.as_deref(), Some("20260101T000010Z"));
}

#[tokio::test]
async fn a_stale_copy_of_the_backup_asks_nothing() {
    let w = World::new();
    w.status("backed-up-1", true, None, None);
    w.instances.answer("backed-up-1", "POST /backup", 202, json!({"id": "20260101T000010Z"}));
    let stale = w.backup();
    w.pass().await;
    assert_eq!(w.instances.posts(), 1);
    // The watch cache has not caught up: the reconcile gets the copy from before the write.
    w.status("backed-up-1", true, Some("20260101T000010Z"), None);
    let action = reconcile(Arc::new(stale), w.context()).await.expect("a pass");
    assert_eq!(action, Action::requeue(POLL));
    assert_eq!(w.instances.posts(), 1, "a second backup was asked for: {:?}", w.instances.calls());
    assert_eq!(w.status_now().backup_id.as_deref(), Some("20260101T000010Z"), "the stored status is intact");
}

#[tokio::test]
async fn a_backup_without_a_primary_waits_then_fails_with_a_clear_error() {
    let w = World::new();
    w.set_holder(None);
    let action = w.pass().await;
    assert_eq!(action, Action::requeue(POLL));
    let s = w.status_now();
    assert_eq!(s.phase, Some(BackupPhase::New));
    assert_eq!(s.message.as_deref(), Some("waiting: no instance of backed-up holds the primary Lease"));
    assert_eq!(s.observed_generation, Some(1));
    // Waiting again writes nothing.
    w.api.clear_log();
    w.pass().await;
    assert!(w.api.writes().is_empty(), "{:#?}", w.api.writes());

    w.advance(SignedDuration::from_mins(5));
    let action = w.pass().await;
    assert_eq!(action, Action::await_change());
    let s = w.status_now();
    assert_eq!(s.phase, Some(BackupPhase::Failed));
    assert_eq!(
        s.error.as_deref(),
        Some(
            "the backup could not start within 5 minutes of its creation: no instance of backed-up holds the primary Lease; create a new PostgresBackup once that is resolved"
        )
    );
    assert_eq!(w.events(), ["BackupFailed"]);
    assert_eq!(w.instances.posts(), 0);
}

#[tokio::test]
async fn a_missing_cluster_is_waited_for_and_one_without_a_store_fails_at_once() {
    let w = World::without_cluster();
    w.pass().await;
    assert_eq!(w.status_now().message.as_deref(), Some("waiting: cluster backed-up does not exist in this namespace"));
    assert!(w.api.requests_to("secrets").is_empty(), "nothing else is read");

    let w = World::without_cluster();
    w.api.modify_as::<PostgresBackup>("db", "on-demand", |b| b.spec.cluster.name = "single".into());
    w.cluster("single");
    w.pass().await;
    let s = w.status_now();
    assert_eq!(s.phase, Some(BackupPhase::Failed));
    assert!(s.error.as_deref().is_some_and(|e| e.starts_with("cluster single has no backup.store")), "{s:?}");
}

#[tokio::test]
async fn a_failover_during_a_backup_fails_it() {
    let w = World::new();
    w.status("backed-up-1", true, None, None);
    w.instances.answer("backed-up-1", "POST /backup", 202, json!({"id": "20260101T000010Z"}));
    w.pass().await;
    // backed-up-1's node dies: backed-up-2 takes the Lease, the Pod is created again.
    w.set_holder(Some("backed-up-2"));
    let pod = w.api.get_as::<Pod>("db", "backed-up-1").expect("the pod");
    w.api.remove("v1", "pods", "db", "backed-up-1");
    let mut again = pod.clone();
    again.metadata.uid = None;
    again.metadata.resource_version = None;
    w.api.insert(&again);
    w.status("backed-up-1", false, None, None);
    w.catalog("backed-up-1", &[]);
    w.pass().await;
    let s = w.status_now();
    assert_eq!(s.phase, Some(BackupPhase::Failed));
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("backed-up-1's Pod was re-created while it took backup 20260101T000010Z")),
        "{s:?}"
    );
    assert_eq!(w.instances.posts(), 1, "not asked of the new primary");
}

#[tokio::test]
async fn the_catalog_is_read_from_the_primary_when_the_instance_asked_does_not_answer() {
    let w = World::new();
    w.status("backed-up-1", true, None, None);
    w.instances.answer("backed-up-1", "POST /backup", 202, json!({"id": "20260101T000010Z"}));
    w.pass().await;
    // backed-up-1 finished, then stopped answering; backed-up-2 is primary and lists the store.
    w.instances.script("backed-up-1", "GET /status", Err("connect: refused".into()));
    w.set_holder(Some("backed-up-2"));
    w.catalog("backed-up-2", &[("20260101T000010Z", "2026-01-01T00:00:10Z")]);
    w.pass().await;
    assert_eq!(w.status_now().phase, Some(BackupPhase::Completed));
    assert!(w.instances.calls().contains(&"backed-up-2 GET /backups".to_owned()), "{:?}", w.instances.calls());
}

#[tokio::test]
async fn a_primary_that_cannot_take_a_backup_now_is_asked_again_until_the_deadline() {
    let w = World::new();
    w.status("backed-up-1", true, None, None);
    let unreadable =
        json!({"error": "the backup store: connection refused", "hint": "check the store (instance-manager diagnose)"});
    w.instances.answer("backed-up-1", "POST /backup", 503, unreadable);
    w.pass().await;
    let s = w.status_now();
    assert_eq!((s.phase, s.instance_id.clone()), (Some(BackupPhase::New), None), "nothing started: {s:?}");
    assert!(
        s.message.as_deref().is_some_and(|m| m.contains("HTTP 503 Service Unavailable: the backup store")),
        "{s:?}"
    );
    w.pass().await;
    assert_eq!(w.instances.posts(), 2, "asked again: {:?}", w.instances.calls());

    w.advance(SignedDuration::from_mins(5));
    w.pass().await;
    let s = w.status_now();
    assert_eq!(s.phase, Some(BackupPhase::Failed));
    assert_eq!(
        s.error.as_deref(),
        Some(
            "the backup could not start within 5 minutes of its creation: backed-up-1 answered /backup with HTTP 503 Service Unavailable: the backup store: connection refused (check the store (instance-manager diagnose)); create a new PostgresBackup once that is resolved"
        )
    );
}

#[test]
fn a_started_backup_is_followed_every_second_for_a_minute_then_every_few_seconds() {
    let now: Timestamp = "2026-01-01T00:10:00Z".parse().expect("a time");
    let started = |ago: i64| PostgresBackupStatus {
        phase: Some(BackupPhase::Started),
        started_at: Some(now.checked_sub(SignedDuration::from_secs(ago)).expect("a time").to_string()),
        ..PostgresBackupStatus::default()
    };
    assert_eq!(next_look(&started(3), now), Some(FOLLOW));
    assert_eq!(next_look(&started(FOLLOW_FOR.as_secs() as i64 + 1), now), Some(POLL));
    let waiting = PostgresBackupStatus { phase: Some(BackupPhase::New), ..PostgresBackupStatus::default() };
    assert_eq!(next_look(&waiting, now), Some(POLL), "a backup waiting for its primary is asked at POLL");
    let done = PostgresBackupStatus { phase: Some(BackupPhase::Completed), ..started(3) };
    assert_eq!(next_look(&done, now), None);
}
