//! The documents as a whole keep their wire form: `/status` with its typed values, and
//! `InstanceConfig` with its JSON Schema.

use serde_json::json;

use crate::{InstanceConfig, InstanceRole, InstanceStatus, Lsn, Role, TransitionKind, WalReceiverStatus};

fn status_json() -> serde_json::Value {
    serde_json::from_str(
        r#"{
            "name": "pg-1", "cluster": "main", "role": "replica", "configured_role": "primary",
            "postgres": {"state": "running", "pid": 42, "accepting_connections": true, "version": "15.6",
                         "restarts": 0, "last_exit": null},
            "in_recovery": true, "timeline": 2, "system_identifier": "7",
            "current_lsn": null, "received_lsn": "0/3000060", "replayed_lsn": "16/B374D848",
            "replay_lag_seconds": 0.5,
            "wal_receiver": {"status": "streaming", "sender_host": "pg-0", "sender_port": 5432},
            "replication": [{"name": "pg-2", "client_addr": null, "state": "catchup", "sync_state": "async",
                             "sent_lsn": "0/3000060", "flush_lsn": null, "replay_lsn": null,
                             "lag_bytes": 0, "replay_lag_seconds": null}],
            "pending_restart": [], "config_error": null,
            "lease": {"store": "file /x", "holder": "pg-0", "term": 3, "highest_term": 3,
                      "store_failing_seconds": null, "failsafe_confirmed_age_seconds": null,
                      "failsafe_refusal": null, "failsafe_promised_to": null, "routing_error": null,
                      "held_by_me": false, "renew_age_seconds": null, "membership": null, "expires_in_seconds": 9.5,
                      "sync_standbys": [], "eligible": true, "not_eligible_because": null,
                      "last_decision": "follow pg-0", "last_error": null,
                      "last_transition": {"kind": "failover", "from": "pg-9", "to": "pg-0", "term": 3,
                                          "at": "2026-11-30T10:00:00Z", "duration_ms": 800},
                      "renewals_total": 0, "renew_failures_total": 0,
                      "transitions": {"bootstrap": {"total": 1, "last_duration_ms": 5}}},
            "fenced": false, "priority": 100, "paused": false, "archive": null, "backup": null, "tls": {},
            "data_dir": "/data", "manager_pid": 1, "manager_version": "0.1.0", "uptime_seconds": 60
        }"#,
    )
    .unwrap()
}

#[test]
fn status_round_trips_with_its_typed_values() {
    let status: InstanceStatus = serde_json::from_value(status_json()).unwrap();
    assert_eq!(status.role, InstanceRole::Replica);
    assert_eq!(status.configured_role, Role::Primary);
    assert_eq!(status.received_lsn, Some(Lsn(0x300_0060)));
    assert_eq!(status.wal_receiver.as_ref().map(|w| &w.status), Some(&WalReceiverStatus::Streaming));
    let lease = status.lease.as_ref().unwrap();
    assert_eq!(lease.last_transition.as_ref().map(|t| t.kind), Some(TransitionKind::Failover));
    assert_eq!(lease.transitions[&TransitionKind::Bootstrap].total, 1);
    assert_eq!(serde_json::to_value(&status).unwrap(), status_json(), "serialised back unchanged");
}

#[test]
fn a_bad_lsn_in_a_status_names_it() {
    let mut doc = status_json();
    doc["received_lsn"] = json!("0/zz");
    let e = serde_json::from_value::<InstanceStatus>(doc).unwrap_err().to_string();
    assert!(e.contains("\"0/zz\" is not a WAL location"), "{e}");
}

#[test]
fn the_configuration_has_a_json_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(InstanceConfig)).unwrap();
    let props = &schema["properties"];
    assert_eq!(schema["required"], json!(["dataDir"]), "{schema}");
    for key in ["name", "dataDir", "walDir", "role", "postgres", "lease", "members", "synchronous", "metrics", "backup"]
    {
        assert!(props.get(key).is_some(), "{key} missing from {props}");
    }
    assert!(props.get("data_dir").is_none(), "camelCase like the YAML");
    assert_eq!(schema["additionalProperties"], json!(false), "unknown fields are refused");
    let defs = &schema["$defs"];
    let roles = serde_json::to_string(&defs["Role"]).unwrap();
    assert!(roles.contains("\"primary\"") && roles.contains("\"replica\""), "{roles}");
    assert!(defs.get("BackupSpec").is_some() && defs.get("LeaseSpec").is_some(), "{defs}");
    let parameters = &defs["PostgresSpec"]["properties"]["parameters"];
    assert_eq!(parameters["additionalProperties"], json!({"type": ["string", "number", "boolean"]}), "{parameters}");
}

#[test]
fn a_rendered_configuration_reads_back() {
    let yaml = "dataDir: /data\nrole: replica\nprimary: {host: pg-0, port: 5432}\npostgres:\n  parameters: {work_mem: 4MB, max_connections: 100, fsync: true}\n";
    let config: InstanceConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(config.role, Role::Replica);
    assert_eq!(config.postgres.parameters["max_connections"], "100");
    assert_eq!(config.postgres.parameters["fsync"], "on");
    let rendered = serde_yaml::to_string(&config).unwrap();
    assert_eq!(serde_yaml::from_str::<InstanceConfig>(&rendered).unwrap(), config);
}
