//! The CRD: the deployed YAML is what the types generate, and the schema and CEL rules refuse
//! specs that cannot work with a message naming the field — evaluated here with the same CEL
//! library the API server uses (with its Kubernetes extensions).

use kube::CustomResourceExt;
use kube::core::cel::{Validator, compile_schema};
use serde_json::{Value, json};

use super::{PostgresCluster, crd_yaml};

/// The openAPIV3Schema of `K`'s CRD, as the API server validates with it.
fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let v = &crd.spec.versions[0];
    serde_json::to_value(v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("a schema"))
        .expect("the schema as JSON")
}

fn schema() -> Value {
    schema_of::<PostgresCluster>()
}

/// The messages of every rule of `K`'s CRD that `object` breaks (`old`: an update from it).
fn refusals_of<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of::<K>(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.into_vec().into_iter().map(|e| format!("{}: {}", e.field_path, e.message)).collect(),
    }
}

fn cluster(spec: Value) -> Value {
    json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresCluster", "metadata": {"name": "pg", "namespace": "db"}, "spec": spec})
}

/// The properties under `v` (and under its lists' items) without a description, as paths.
fn undocumented(v: &Value, path: &str, missing: &mut Vec<String>) {
    if let Some(props) = v.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let here = format!("{path}.{k}");
            if p.get("description").is_none() {
                missing.push(here.clone());
            }
            undocumented(p, &here, missing);
            if let Some(items) = p.get("items") {
                undocumented(items, &here, missing);
            }
        }
    }
}

fn refusals(object: &Value, old: Option<&Value>) -> Vec<String> {
    refusals_of::<PostgresCluster>(object, old)
}

fn base() -> Value {
    json!({"instances": 3, "storage": {"size": "1Gi"}})
}

fn with(patch: Value) -> Value {
    let mut spec = base();
    json_merge(&mut spec, &patch);
    cluster(spec)
}

fn json_merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                json_merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

#[test]
fn the_deployed_crd_is_generated_from_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crd.yaml");
    let want = crd_yaml();
    if std::env::var_os("PGWARDEN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &want).expect("write deploy/crd.yaml");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "operator/deploy/crd.yaml is stale: run `PGWARDEN_UPDATE_GOLDEN=1 cargo nextest run -p operator crd` (or `operator crd > operator/deploy/crd.yaml`) and commit it"
    );
}

#[test]
fn the_crd_has_a_short_name_status_and_printer_columns() {
    let crd = PostgresCluster::crd();
    assert_eq!(crd.spec.group, "pgwarden.io");
    assert_eq!(crd.spec.names.short_names, Some(vec!["pgc".to_owned()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "status subresource");
    let columns: Vec<String> = v.additional_printer_columns.iter().flatten().map(|c| c.name.clone()).collect();
    assert_eq!(columns, ["Instances", "Ready", "Primary", "Phase", "Age"]);
}

#[test]
fn every_rule_compiles() {
    let compiled = compile_schema(&schema());
    let errors: Vec<String> = compiled.compilation_errors().iter().map(|e| format!("{e:?}")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_schema_refuses_zero_instances_and_documents_every_field() {
    let s = schema();
    let instances = &s["properties"]["spec"]["properties"]["instances"];
    assert_eq!(instances["minimum"].as_f64(), Some(1.0));
    assert_eq!(instances["default"].as_f64(), Some(1.0));
    // Every property of the spec has a description.
    let mut missing = Vec::new();
    undocumented(&s["properties"]["spec"], "spec", &mut missing);
    assert!(missing.is_empty(), "undocumented fields: {missing:#?}");
}

#[test]
fn a_sound_spec_passes() {
    assert_eq!(refusals(&cluster(base()), None), Vec::<String>::new());
    let full = with(json!({
        "synchronous": {"number": 1},
        "ha": {"leaseDurationSeconds": 5, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1, "fenceBudgetSeconds": 1.5},
        "backup": {"store": {"destination": "s3://bucket/pg", "s3": {"accessKeyId": {"name": "s3", "key": "id"}}}, "retention": {"count": 7}},
        "bootstrap": {"recovery": {"source": {"destination": "s3://bucket/old"}, "target": {"time": "2026-11-30T12:00:00Z"}}},
    }));
    assert_eq!(refusals(&full, None), Vec::<String>::new());
}

#[test]
fn timing_rules_are_those_of_the_instances() {
    let bad = with(
        json!({"ha": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 9, "retryPeriodSeconds": 2, "fenceBudgetSeconds": 2}}),
    );
    let r = refusals(&bad, None);
    assert!(
        r.iter().any(|m| m.contains("renewDeadlineSeconds + fenceBudgetSeconds must be below leaseDurationSeconds")),
        "{r:?}"
    );
    let bad = with(json!({"ha": {"renewDeadlineSeconds": 2, "retryPeriodSeconds": 2}}));
    let r = refusals(&bad, None);
    assert!(r.iter().any(|m| m.contains("retryPeriodSeconds × 1.2 must be below renewDeadlineSeconds")), "{r:?}");
}

#[test]
fn synchronous_standbys_need_enough_instances() {
    let r = refusals(&with(json!({"instances": 1, "synchronous": {"number": 1}})), None);
    assert!(r.iter().any(|m| m.contains("synchronous.number must be lower than instances")), "{r:?}");
}

#[test]
fn replicas_from_backups_need_a_backup_store() {
    let r = refusals(&with(json!({"replicaSource": "backup"})), None);
    assert!(r.iter().any(|m| m.contains("replicaSource: backup needs backup")), "{r:?}");
    let store = json!({"store": {"destination": "s3://bucket/path"}});
    assert!(refusals(&with(json!({"replicaSource": "backup", "backup": store})), None).is_empty());
    assert!(refusals(&with(json!({"replicaSource": "auto"})), None).is_empty());
    let values = &schema()["properties"]["spec"]["properties"]["replicaSource"]["enum"];
    assert_eq!(values, &json!(["auto", "primary", "backup"]), "the API server refuses any other value");
}

#[test]
fn volumes_grow_and_never_shrink_or_change_class() {
    let old = with(json!({"storage": {"size": "10Gi", "storageClass": "fast"}}));
    assert_eq!(
        refusals(&with(json!({"storage": {"size": "20Gi", "storageClass": "fast"}})), Some(&old)),
        Vec::<String>::new()
    );
    let r = refusals(&with(json!({"storage": {"size": "5Gi", "storageClass": "fast"}})), Some(&old));
    assert!(r.iter().any(|m| m.contains("size cannot shrink")), "{r:?}");
    // 10000Mi < 10Gi: compared as sizes, not as text.
    let r = refusals(&with(json!({"storage": {"size": "10000Mi", "storageClass": "fast"}})), Some(&old));
    assert!(r.iter().any(|m| m.contains("size cannot shrink")), "{r:?}");
    let r = refusals(&with(json!({"storage": {"size": "10Gi", "storageClass": "slow"}})), Some(&old));
    assert!(r.iter().any(|m| m.contains("storageClass is immutable")), "{r:?}");
    let r = refusals(&with(json!({"storage": {"size": "ten gigs"}})), None);
    assert!(r.iter().any(|m| m.contains("size must be a whole number of Mi, Gi or Ti")), "{r:?}");
    let r = refusals(&with(json!({"storage": {"size": "1.5Gi"}})), None);
    assert!(r.iter().any(|m| m.contains("size must be a whole number of Mi, Gi or Ti")), "{r:?}");
    // 1Ti > 1000Gi, and growing across units is allowed.
    let old = with(json!({"storage": {"size": "1000Gi"}}));
    assert_eq!(refusals(&with(json!({"storage": {"size": "1Ti"}})), Some(&old)), Vec::<String>::new());
    let old = with(json!({"storage": {"size": "2Ti"}}));
    let r = refusals(&with(json!({"storage": {"size": "2000Gi"}})), Some(&old));
    assert!(r.iter().any(|m| m.contains("size cannot shrink")), "{r:?}");
}

#[test]
fn bootstrap_is_immutable_and_takes_one_method() {
    let old = with(json!({"bootstrap": {"initdb": {"database": "app", "owner": "app"}}}));
    let new = with(json!({"bootstrap": {"initdb": {"database": "shop", "owner": "app"}}}));
    let r = refusals(&new, Some(&old));
    assert!(r.iter().any(|m| m.contains("bootstrap is immutable")), "{r:?}");
    let both = with(json!({"bootstrap": {"initdb": {}, "recovery": {"source": {"destination": "s3://b/p"}}}}));
    let r = refusals(&both, None);
    assert!(r.iter().any(|m| m.contains("one of initdb and recovery")), "{r:?}");
}

#[test]
fn a_recovery_target_names_one_point_and_stores_match_their_credentials() {
    let r = refusals(
        &with(
            json!({"bootstrap": {"recovery": {"source": {"destination": "s3://b/p"}, "target": {"time": "2026-11-30T12:00:00Z", "lsn": "0/3000060"}}}}),
        ),
        None,
    );
    assert!(r.iter().any(|m| m.contains("at most one of time, lsn")), "{r:?}");
    let r = refusals(&with(json!({"backup": {"store": {"destination": "gs://b/p", "s3": {}}}})), None);
    assert!(r.iter().any(|m| m.contains("s3 credentials need an s3:// destination")), "{r:?}");
    let r = refusals(
        &with(
            json!({"backup": {"store": {"destination": "s3://b/p"}, "retention": {"count": 3, "recoveryWindowDays": 7}}}),
        ),
        None,
    );
    assert!(r.iter().any(|m| m.contains("exactly one of recoveryWindowDays and count")), "{r:?}");
}

#[test]
fn the_cluster_name_must_fit_the_names_made_from_it() {
    let mut c = cluster(base());
    c["metadata"]["name"] = json!("a-name-that-is-much-too-long-for-the-pods-and-services-made-from-it");
    let r = refusals(&c, None);
    assert!(r.iter().any(|m| m.contains("metadata.name must be a DNS label of at most 50")), "{r:?}");
    c["metadata"]["name"] = json!("Bad.Name");
    assert!(!refusals(&c, None).is_empty());
}

#[test]
fn a_wal_volume_is_chosen_at_creation_only() {
    let old = cluster(base());
    let r = refusals(&with(json!({"walStorage": {"size": "2Gi"}})), Some(&old));
    assert!(r.iter().any(|m| m.contains("walStorage cannot be added to or removed")), "{r:?}");
    let old = with(json!({"walStorage": {"size": "2Gi"}}));
    let r = refusals(&cluster(base()), Some(&old));
    assert!(r.iter().any(|m| m.contains("walStorage cannot be added to or removed")), "{r:?}");
    // Growing it is fine; shrinking it is not.
    assert_eq!(refusals(&with(json!({"walStorage": {"size": "4Gi"}})), Some(&old)), Vec::<String>::new());
    let r = refusals(&with(json!({"walStorage": {"size": "1Gi"}})), Some(&old));
    assert!(r.iter().any(|m| m.contains("size cannot shrink")), "{r:?}");
}

mod backup {
    use kube::CustomResourceExt;
    use kube::core::cel::compile_schema;
    use serde_json::{Value, json};

    use crate::crd::{BackupMethod, PostgresBackup};

    fn schema() -> Value {
        super::schema_of::<PostgresBackup>()
    }

    fn backup(spec: Value) -> Value {
        json!({"apiVersion": "pgwarden.io/v1alpha1", "kind": "PostgresBackup", "metadata": {"name": "b", "namespace": "db"}, "spec": spec})
    }

    fn refusals(object: &Value, old: Option<&Value>) -> Vec<String> {
        super::refusals_of::<PostgresBackup>(object, old)
    }

    #[test]
    fn the_backup_crd_has_a_short_name_status_and_printer_columns() {
        let crd = PostgresBackup::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("postgresbackups.pgwarden.io"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["pgb".to_owned()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(), "status subresource");
        let columns: Vec<String> = v.additional_printer_columns.iter().flatten().map(|c| c.name.clone()).collect();
        assert_eq!(columns, ["Cluster", "Phase", "Backup ID", "Started", "Age"]);
        let s = schema();
        let phases = &s["properties"]["status"]["properties"]["phase"]["enum"];
        assert_eq!(phases, &json!(["New", "Started", "Completed", "Failed"]));
        // CloudNativePG's names where they exist.
        let status = s["properties"]["status"]["properties"].as_object().expect("status properties");
        for field in
            ["backupId", "startedAt", "stoppedAt", "beginLSN", "endLSN", "beginWal", "endWal", "instanceID", "error"]
        {
            assert!(status.contains_key(field), "status.{field}");
        }
    }

    #[test]
    fn every_backup_field_is_documented_and_every_rule_compiles() {
        let s = schema();
        let mut missing = Vec::new();
        super::undocumented(&s["properties"]["spec"], "spec", &mut missing);
        super::undocumented(&s["properties"]["status"], "status", &mut missing);
        assert!(missing.is_empty(), "undocumented fields: {missing:#?}");
        let compiled = compile_schema(&s);
        let errors: Vec<String> = compiled.compilation_errors().iter().map(|e| format!("{e:?}")).collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }

    #[test]
    fn a_backup_names_its_cluster_and_its_spec_is_immutable() {
        let spec = backup(json!({"cluster": {"name": "pg"}}));
        assert_eq!(refusals(&spec, None), Vec::<String>::new());
        let parsed: PostgresBackup = serde_json::from_value(spec.clone()).expect("a backup");
        assert_eq!(parsed.spec.method, BackupMethod::BaseBackup, "the default method");
        let other = backup(json!({"cluster": {"name": "other"}}));
        let r = refusals(&other, Some(&spec));
        assert!(r.iter().any(|m| m.contains("spec is immutable")), "{r:?}");
        assert_eq!(refusals(&spec, Some(&spec)), Vec::<String>::new());
        // The schema (which the API server applies, the CEL library does not): a cluster is
        // required, and the only method is a base backup.
        let s = schema();
        assert_eq!(s["properties"]["spec"]["required"], json!(["cluster"]));
        assert_eq!(s["properties"]["spec"]["properties"]["method"]["enum"], json!(["baseBackup"]));
        assert_eq!(s["properties"]["spec"]["properties"]["method"]["default"], json!("baseBackup"));
    }
}

#[test]
fn the_backup_sample_is_a_sound_postgres_backup() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/backups/on-demand.yaml");
    let text = std::fs::read_to_string(&path).expect("testdata/backups/on-demand.yaml");
    let mut doc: Value = serde_yaml::from_str(&text).expect("YAML");
    doc["metadata"]["namespace"] = json!("db");
    let backup: crate::crd::PostgresBackup = serde_json::from_value(doc.clone()).expect("a PostgresBackup");
    assert_eq!(backup.spec.cluster.name, "backed-up", "the cluster of testdata/clusters/backup-s3.yaml");
    let crd = crate::crd::PostgresBackup::crd();
    let v = &crd.spec.versions[0];
    let schema = serde_json::to_value(v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).expect("a schema"))
        .expect("the schema as JSON");
    assert!(Validator::new().validate(&schema, &doc, None).is_ok());
}
