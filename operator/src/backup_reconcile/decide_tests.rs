//! The decision, one rule at a time: when a backup is asked for, what it waits for and for how
//! long, how an answer that was lost is looked up instead of asked again, how it completes and
//! every way it fails. Times are minutes after the backup's creation.

use jiff::{SignedDuration, Timestamp};
use pgwarden_contract::{BackupInfo, BadPage, Compression, ListedBackup, Lsn};

use super::decide::*;
use crate::crd::{BackupPhase, InstanceId, PostgresBackupStatus};

const CREATED: &str = "2026-03-01T10:00:00Z";

fn at(minutes: i64) -> Timestamp {
    let created: Timestamp = CREATED.parse().expect("a time");
    created.checked_add(SignedDuration::from_mins(minutes)).expect("in range")
}

fn listed(id: &str, instance: &str, started: Timestamp) -> ListedBackup {
    ListedBackup {
        info: BackupInfo {
            id: id.into(),
            cluster: "pg".into(),
            instance: instance.into(),
            from_standby: false,
            system_identifier: "7300000000000000001".into(),
            postgres_version: "15.18".into(),
            postgres_version_num: 150018,
            timeline: 2,
            segment_size: 16 << 20,
            start_lsn: Lsn(0x3_0000_0028),
            stop_lsn: Lsn(0x3_0000_0138),
            start_wal: "000000020000000300000000".into(),
            stop_wal: "000000020000000300000000".into(),
            started_at: started,
            stopped_at: started.checked_add(SignedDuration::from_secs(42)).expect("in range"),
            compression: Compression::Zstd,
            files: Vec::new(),
            data_bytes: 50_000_000,
            stored_bytes: 9_000_000,
            checksum_failures: Some(0),
            checksum_failed_pages: Vec::new(),
        },
        retention: None,
    }
}

fn catalog(backups: Vec<ListedBackup>) -> Option<Result<Catalog, String>> {
    Some(Ok(Catalog { destination: "s3://backups/pgwarden".into(), backups }))
}

fn primary() -> InstanceView {
    InstanceView { is_primary: true, running: None, last_failure: None, archive_failing: None }
}

fn instance(name: &str, uid: &str, answer: Result<InstanceView, String>) -> Option<InstanceSeen> {
    Some(InstanceSeen { name: name.into(), pod_uid: Some(uid.into()), answer })
}

fn ready(primary: &str) -> ClusterSeen {
    ClusterSeen::Ready { primary: Some(primary.into()) }
}

fn decide_at(
    minutes: i64,
    status: &PostgresBackupStatus,
    cluster: ClusterSeen,
    instance: Option<InstanceSeen>,
    catalog: Option<Result<Catalog, String>>,
) -> Decision {
    decide(&Seen {
        now: at(minutes),
        created: Some(at(0)),
        generation: Some(1),
        status,
        cluster_name: "pg",
        cluster,
        instance,
        catalog,
    })
}

/// The status written before `POST /backup` to `pg-1` at minute 1.
fn asked() -> PostgresBackupStatus {
    PostgresBackupStatus {
        phase: Some(BackupPhase::Started),
        instance_id: Some(InstanceId { pod_name: "pg-1".into(), pod_uid: Some("uid-1".into()) }),
        started_at: Some(at(1).to_string()),
        message: Some("asking pg-1 for a base backup".into()),
        observed_generation: Some(1),
        ..PostgresBackupStatus::default()
    }
}

/// The status once `pg-1` answered id `20260301T100100Z`.
fn running() -> PostgresBackupStatus {
    PostgresBackupStatus { backup_id: Some("20260301T100100Z".into()), ..asked() }
}

fn failed_with(d: &Decision, words: &str) {
    assert_eq!(d.status.phase, Some(BackupPhase::Failed), "{d:#?}");
    assert!(d.status.error.as_deref().is_some_and(|e| e.contains(words)), "error should say {words:?}: {d:#?}");
    assert_eq!(d.notice.as_ref().map(|n| (n.reason, n.warning)), Some(("BackupFailed", true)));
    assert!(d.start.is_none());
}

fn waiting(d: &Decision, phase: BackupPhase, words: &str) {
    assert_eq!(d.status.phase, Some(phase), "{d:#?}");
    assert!(d.status.message.as_deref().is_some_and(|m| m.contains(words)), "message should say {words:?}: {d:#?}");
    assert!(d.start.is_none() && d.notice.is_none(), "{d:#?}");
}

#[test]
fn a_new_backup_is_asked_of_the_primary_and_recorded_before_it_is_sent() {
    let new = PostgresBackupStatus::default();
    let d = decide_at(1, &new, ready("pg-1"), instance("pg-1", "uid-1", Ok(primary())), None);
    assert_eq!(d.start.as_deref(), Some("pg-1"));
    assert_eq!(d.status, asked(), "Started, the instance and its Pod's uid, when; no id yet");
    assert!(d.notice.is_none(), "the Event comes with the id");

    let d = after_start(&asked(), "pg-1", StartAnswer::Accepted("20260301T100100Z".into()), Some(at(0)), at(1));
    assert_eq!(d.status.backup_id.as_deref(), Some("20260301T100100Z"));
    assert_eq!(d.status.phase, Some(BackupPhase::Started));
    let notice = d.notice.expect("an event");
    assert_eq!((notice.reason, notice.warning), ("BackupStarted", false));
    assert!(notice.note.contains("20260301T100100Z started on pg-1"), "{notice:?}");
}

#[test]
fn a_backup_waits_for_its_cluster_and_a_free_primary_then_fails_at_the_deadline() {
    let new = PostgresBackupStatus::default();
    let d = decide_at(1, &new, ClusterSeen::Missing, None, None);
    waiting(&d, BackupPhase::New, "cluster pg does not exist");
    assert_eq!(d.status.observed_generation, Some(1));
    waiting(
        &decide_at(1, &new, ClusterSeen::Ready { primary: None }, None, None),
        BackupPhase::New,
        "no instance of pg holds the primary Lease",
    );
    let busy = InstanceView { running: Some("20260301T020000Z".into()), ..primary() };
    let d = decide_at(1, &new, ready("pg-1"), instance("pg-1", "uid-1", Ok(busy)), None);
    waiting(&d, BackupPhase::New, "backup 20260301T020000Z is running on pg-1");
    let replica = InstanceView { is_primary: false, ..primary() };
    let d = decide_at(1, &new, ready("pg-1"), instance("pg-1", "uid-1", Ok(replica)), None);
    waiting(&d, BackupPhase::New, "not out of recovery");
    let d = decide_at(
        1,
        &new,
        ready("pg-1"),
        instance("pg-1", "uid-1", Err("connect 10.0.0.1:8000: refused".into())),
        None,
    );
    waiting(&d, BackupPhase::New, "the primary pg-1 does not answer: connect 10.0.0.1:8000: refused");
    let no_pod = Some(InstanceSeen { name: "pg-1".into(), pod_uid: None, answer: Err("there is no Pod pg-1".into()) });
    waiting(&decide_at(1, &new, ready("pg-1"), no_pod, None), BackupPhase::New, "has no Pod");

    // Five minutes after its creation, what blocks it is its error.
    let d = decide_at(6, &new, ClusterSeen::Ready { primary: None }, None, None);
    failed_with(&d, "could not start within 5 minutes of its creation: no instance of pg holds the primary Lease");
    failed_with(&decide_at(6, &new, ClusterSeen::Missing, None, None), "cluster pg does not exist");
    // A primary that turns up in time is asked, however late.
    let d = decide_at(6, &new, ready("pg-1"), instance("pg-1", "uid-1", Ok(primary())), None);
    assert_eq!(d.start.as_deref(), Some("pg-1"));
}

#[test]
fn a_cluster_without_a_store_fails_at_once() {
    let d = decide_at(0, &PostgresBackupStatus::default(), ClusterSeen::NoStore, None, None);
    failed_with(&d, "cluster pg has no backup.store");
    failed_with(&d, "set spec.backup.store");
}

#[test]
fn an_error_answer_is_a_verdict_unless_it_means_not_now() {
    let not_started = |status: u16, message: &str| StartAnswer::NotStarted {
        status: http::StatusCode::from_u16(status).expect("a status"),
        message: message.into(),
    };
    let d = after_start(
        &asked(),
        "pg-1",
        not_started(401, "pg-1 answered /backup with HTTP 401 Unauthorized: missing bearer token"),
        Some(at(0)),
        at(1),
    );
    failed_with(&d, "HTTP 401 Unauthorized: missing bearer token; create a new PostgresBackup");

    // The schedule started a backup between the check and the request: not now; ask again.
    let busy =
        "pg-1 answered /backup with HTTP 409 Conflict: backup 20260301T100100Z is already running on this instance";
    let d = after_start(&asked(), "pg-1", not_started(409, busy), Some(at(0)), at(1));
    waiting(&d, BackupPhase::New, "is already running on this instance; asking the primary again");
    assert_eq!((d.status.instance_id.clone(), d.status.started_at.clone()), (None, None), "nothing is asked any more");
    // The store cannot be read just now.
    let store = "pg-1 answered /backup with HTTP 503 Service Unavailable: the backup store: timeout (check the store)";
    let d = after_start(&asked(), "pg-1", not_started(503, store), Some(at(0)), at(1));
    waiting(&d, BackupPhase::New, "the backup store: timeout");
    // Past the deadline "not now" is the end.
    let d = after_start(&asked(), "pg-1", not_started(503, store), Some(at(0)), at(6));
    failed_with(&d, "could not start within 5 minutes of its creation: pg-1 answered /backup with HTTP 503");
    // A backup that failed at once (500) is a verdict.
    let d = after_start(&asked(), "pg-1", not_started(500, "pg-1 answered /backup with HTTP 500"), Some(at(0)), at(1));
    assert_eq!(d.status.phase, Some(BackupPhase::Failed));
}

#[test]
fn an_unanswered_request_is_kept_and_looked_up_not_sent_again() {
    let d = after_start(
        &asked(),
        "pg-1",
        StartAnswer::NoAnswer("10.0.0.1:8000 did not answer within 30s".into()),
        Some(at(0)),
        at(1),
    );
    waiting(&d, BackupPhase::Started, "got no answer (10.0.0.1:8000 did not answer within 30s)");
    assert_eq!(d.status.instance_id, asked().instance_id);
    assert_eq!(d.status.backup_id, None);

    // Next pass: pg-1 is running it: adopted.
    let running_there = InstanceView { running: Some("20260301T100105Z".into()), ..primary() };
    let d = decide_at(2, &asked(), ready("pg-1"), instance("pg-1", "uid-1", Ok(running_there)), catalog(vec![]));
    assert_eq!(d.status.backup_id.as_deref(), Some("20260301T100105Z"));
    assert_eq!(d.notice.map(|n| n.reason), Some("BackupStarted"));
    assert!(d.start.is_none());

    // Or it is done already: the catalog has a backup of pg-1 begun since the request (with
    // the clocks a few seconds apart).
    let done = listed("20260301T100058Z", "pg-1", at(1).checked_sub(SignedDuration::from_secs(2)).expect("a time"));
    let d = decide_at(3, &asked(), ready("pg-1"), instance("pg-1", "uid-1", Ok(primary())), catalog(vec![done]));
    assert_eq!(d.status.phase, Some(BackupPhase::Completed));
    assert_eq!(d.status.backup_id.as_deref(), Some("20260301T100058Z"));

    // Or it failed there since.
    let failure =
        InstanceView { last_failure: Some(("20260301T100100Z: upload: connection reset".into(), at(2))), ..primary() };
    let d = decide_at(3, &asked(), ready("pg-1"), instance("pg-1", "uid-1", Ok(failure)), catalog(vec![]));
    failed_with(
        &d,
        "the backup asked of pg-1 at 2026-03-01T10:01:00Z failed: 20260301T100100Z: upload: connection reset",
    );
}

#[test]
fn a_request_that_left_no_trace_is_asked_again_and_an_older_backup_is_not_taken_for_it() {
    // Last night's scheduled backup is in the catalog; pg-1 runs nothing and reports no
    // failure since the request: the request never arrived.
    let nightly = listed("20260301T020000Z", "pg-1", at(-480));
    let d =
        decide_at(2, &asked(), ready("pg-1"), instance("pg-1", "uid-1", Ok(primary())), catalog(vec![nightly.clone()]));
    waiting(&d, BackupPhase::New, "pg-1 has no trace of the backup asked at 2026-03-01T10:01:00Z");
    assert_eq!((d.status.instance_id.clone(), d.status.started_at.clone()), (None, None));
    // An old failure is not this request's either.
    let old = InstanceView { last_failure: Some(("scheduled backup: no store".into(), at(-60))), ..primary() };
    let d = decide_at(2, &asked(), ready("pg-1"), instance("pg-1", "uid-1", Ok(old)), catalog(vec![nightly.clone()]));
    assert_eq!(d.status.phase, Some(BackupPhase::New), "{d:#?}");
    // Without the catalog, no trace is not proven: wait.
    let d = decide_at(
        2,
        &asked(),
        ready("pg-1"),
        instance("pg-1", "uid-1", Ok(primary())),
        Some(Err("the store: timeout".into())),
    );
    waiting(&d, BackupPhase::Started, "cannot read the catalog");
    // The Pod asked was re-created: whatever it ran is gone; ask again, once the catalog
    // shows it did not complete first.
    let d =
        decide_at(2, &asked(), ready("pg-1"), instance("pg-1", "uid-9", Ok(primary())), catalog(vec![nightly.clone()]));
    waiting(&d, BackupPhase::New, "re-created before it confirmed");
    let d = decide_at(2, &asked(), ready("pg-1"), instance("pg-1", "uid-9", Ok(primary())), None);
    waiting(&d, BackupPhase::Started, "cannot read the catalog");
    // Past the start deadline that is the end.
    let d = decide_at(7, &asked(), ready("pg-1"), instance("pg-1", "uid-1", Ok(primary())), catalog(vec![nightly]));
    failed_with(&d, "could not start within 5 minutes");
}

#[test]
fn a_running_backup_completes_from_its_catalog_record() {
    let d = decide_at(
        2,
        &running(),
        ready("pg-1"),
        instance("pg-1", "uid-1", Ok(InstanceView { running: Some("20260301T100100Z".into()), ..primary() })),
        catalog(vec![]),
    );
    waiting(&d, BackupPhase::Started, "backup 20260301T100100Z is running on pg-1");
    // While WAL archiving fails the backup cannot end: the message says why.
    let stuck = InstanceView {
        running: Some("20260301T100100Z".into()),
        archive_failing: Some("s3://b/p belongs to another cluster".into()),
        ..primary()
    };
    let d = decide_at(2, &running(), ready("pg-1"), instance("pg-1", "uid-1", Ok(stuck)), catalog(vec![]));
    waiting(
        &d,
        BackupPhase::Started,
        "backup 20260301T100100Z is running on pg-1, and cannot end until its WAL is archived: archiving fails: s3://b/p belongs to another cluster",
    );

    let d = decide_at(
        3,
        &running(),
        ready("pg-1"),
        instance("pg-1", "uid-1", Ok(primary())),
        catalog(vec![listed("20260301T100100Z", "pg-1", at(1))]),
    );
    let s = &d.status;
    assert_eq!(s.phase, Some(BackupPhase::Completed));
    assert_eq!((s.message.as_deref(), s.error.as_deref()), (None, None));
    assert_eq!(s.started_at.as_deref(), Some("2026-03-01T10:01:00Z"));
    assert_eq!(s.stopped_at.as_deref(), Some("2026-03-01T10:01:42Z"));
    assert_eq!((s.begin_lsn.as_deref(), s.end_lsn.as_deref()), (Some("3/28"), Some("3/138")));
    assert_eq!(s.begin_wal.as_deref(), Some("000000020000000300000000"));
    assert_eq!((s.timeline, s.size_bytes, s.stored_bytes), (Some(2), Some(50_000_000), Some(9_000_000)));
    assert_eq!(s.destination_path.as_deref(), Some("s3://backups/pgwarden"));
    assert_eq!(s.instance_id, asked().instance_id);
    let notice = d.notice.expect("an event");
    assert_eq!((notice.reason, notice.warning), ("BackupCompleted", false));
    assert!(notice.note.contains("9000000 bytes stored in 42 s"), "{notice:?}");

    // Listed by another instance after a failover: it completed all the same.
    let d = decide_at(
        3,
        &running(),
        ready("pg-2"),
        Some(InstanceSeen { name: "pg-1".into(), pod_uid: None, answer: Err("there is no Pod pg-1".into()) }),
        catalog(vec![listed("20260301T100100Z", "pg-1", at(1))]),
    );
    assert_eq!(d.status.phase, Some(BackupPhase::Completed));
}

#[test]
fn a_backup_fails_when_it_failed_ended_unlisted_or_lost_its_pod() {
    let failure = InstanceView {
        last_failure: Some(("20260301T100100Z: upload data.tar.zst: 403 Forbidden".into(), at(2))),
        ..primary()
    };
    let d = decide_at(3, &running(), ready("pg-1"), instance("pg-1", "uid-1", Ok(failure)), catalog(vec![]));
    failed_with(&d, "backup 20260301T100100Z failed on pg-1: upload data.tar.zst: 403 Forbidden; see pg-1's log");

    let d = decide_at(3, &running(), ready("pg-1"), instance("pg-1", "uid-1", Ok(primary())), catalog(vec![]));
    failed_with(&d, "neither running on pg-1 nor in the catalog");

    let gone = Some(InstanceSeen { name: "pg-1".into(), pod_uid: None, answer: Err("there is no Pod pg-1".into()) });
    let d = decide_at(3, &running(), ready("pg-2"), gone.clone(), catalog(vec![]));
    failed_with(&d, "pg-1's Pod was deleted while it took backup 20260301T100100Z");
    // Not before the catalog says it did not complete first.
    let d = decide_at(3, &running(), ready("pg-2"), gone, None);
    waiting(&d, BackupPhase::Started, "cannot read the catalog to find backup 20260301T100100Z");
    let d = decide_at(
        3,
        &running(),
        ready("pg-2"),
        instance("pg-1", "uid-7", Ok(InstanceView { is_primary: false, ..primary() })),
        catalog(vec![]),
    );
    failed_with(&d, "pg-1's Pod was re-created");

    let mut corrupt = listed("20260301T100100Z", "pg-1", at(1));
    corrupt.info.checksum_failures = Some(3);
    corrupt.info.checksum_failed_pages = vec![BadPage { file: "base/5/16384".into(), block: 7 }];
    let d = decide_at(3, &running(), ready("pg-1"), instance("pg-1", "uid-1", Ok(primary())), catalog(vec![corrupt]));
    failed_with(&d, "3 data page(s) failing checksum verification, the first in base/5/16384 block 7");
    assert_eq!(d.status.end_lsn.as_deref(), Some("3/138"), "the kept backup is described");
}

#[test]
fn an_instance_that_stops_answering_is_waited_for_five_minutes() {
    let d = decide_at(
        2,
        &running(),
        ready("pg-1"),
        instance("pg-1", "uid-1", Err("10.0.0.1:8000 did not answer within 3s".into())),
        None,
    );
    waiting(
        &d,
        BackupPhase::Started,
        "pg-1, taking backup 20260301T100100Z, does not answer: 10.0.0.1:8000 did not answer",
    );
    assert_eq!(d.status.unreachable_since.as_deref(), Some("2026-03-01T10:02:00Z"));
    let still = d.status.clone();
    let d = decide_at(6, &still, ready("pg-1"), instance("pg-1", "uid-1", Err("no answer".into())), None);
    assert_eq!(d.status.unreachable_since.as_deref(), Some("2026-03-01T10:02:00Z"), "counted from the first");
    assert_eq!(d.status.phase, Some(BackupPhase::Started));
    // It answers again: the count starts over.
    let back = InstanceView { running: Some("20260301T100100Z".into()), ..primary() };
    let d = decide_at(6, &still, ready("pg-1"), instance("pg-1", "uid-1", Ok(back)), catalog(vec![]));
    assert_eq!(d.status.unreachable_since, None);
    // It does not: failed after five minutes.
    let d = decide_at(8, &still, ready("pg-1"), instance("pg-1", "uid-1", Err("no answer".into())), None);
    failed_with(&d, "no answer for 5 minutes (no answer)");
}

#[test]
fn a_final_backup_is_left_alone() {
    for phase in [BackupPhase::Completed, BackupPhase::Failed] {
        let status = PostgresBackupStatus { phase: Some(phase), ..running() };
        let d = decide_at(60, &status, ClusterSeen::Missing, None, None);
        assert_eq!((d.status, d.start, d.notice), (status, None, None));
    }
}

/// The idempotency invariant: once a request is on record (`Started`), no input makes the
/// decision ask again; only a return to `New` (no trace of it) can.
#[test]
fn a_started_backup_is_never_asked_for_again() {
    let answers = [
        Ok(primary()),
        Ok(InstanceView { running: Some("20260301T100100Z".into()), ..primary() }),
        Ok(InstanceView { running: Some(STARTING.into()), ..primary() }),
        Ok(InstanceView { running: Some("20260301T020000Z".into()), ..primary() }),
        Ok(InstanceView { is_primary: false, ..primary() }),
        Ok(InstanceView { last_failure: Some(("20260301T100100Z: boom".into(), at(2))), ..primary() }),
        Err("no answer".to_owned()),
    ];
    let catalogs = [
        None,
        Some(Err("the store: timeout".to_owned())),
        catalog(vec![]),
        catalog(vec![listed("20260301T020000Z", "pg-1", at(-480))]),
        catalog(vec![listed("20260301T100100Z", "pg-1", at(1))]),
    ];
    for status in [asked(), running(), PostgresBackupStatus { unreachable_since: Some(at(1).to_string()), ..running() }]
    {
        for uid in ["uid-1", "uid-2"] {
            for answer in &answers {
                for catalog in &catalogs {
                    for minutes in [1, 4, 30] {
                        let d = decide_at(
                            minutes,
                            &status,
                            ready("pg-1"),
                            instance("pg-1", uid, answer.clone()),
                            catalog.clone(),
                        );
                        assert!(d.start.is_none(), "asked again from {status:?} with {answer:?} and {catalog:?}");
                        assert!(
                            d.status.phase != Some(BackupPhase::New) || status.backup_id.is_none(),
                            "a backup with an id went back to New: {d:#?}"
                        );
                    }
                }
            }
        }
    }
}
