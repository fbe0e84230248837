//! `<cluster>-config`: the instances' `InstanceConfig` (the contract crate's type), one document
//! for every instance — each learns its own name from `POD_NAME`. Members are addressed by the
//! headless Service's stable DNS names; the lease is the Kubernetes Lease `<cluster>-primary`;
//! every secret is a mounted file ([`super::paths`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use pgwarden_contract as api;

use super::paths::{self, CONFIG_KEY};
use super::{BuildError, Cluster};
use crate::crd::{self, Compression, ObjectStore};
use crate::names::{API_PORT, PG_PORT};

/// Where new replicas clone from: `auto` is a backup when there is a backup store.
fn replica_source(spec: &crd::PostgresClusterSpec) -> api::ReplicaSource {
    match (spec.replica_source, &spec.backup) {
        (crd::ReplicaSource::Primary, _) | (crd::ReplicaSource::Auto, None) => api::ReplicaSource::Primary,
        (crd::ReplicaSource::Backup | crd::ReplicaSource::Auto, Some(_)) => api::ReplicaSource::Backup,
        // Refused by the API server (rules.rs); should one get through, the primary works.
        (crd::ReplicaSource::Backup, None) => api::ReplicaSource::Primary,
    }
}

/// The ConfigMap holding `instance.yaml`.
pub fn config_map(cluster: &Cluster<'_>) -> Result<ConfigMap, BuildError> {
    let config = instance_config(cluster)?;
    let mut value = serde_json::to_value(&config).map_err(|e| BuildError::Render(e.to_string()))?;
    // What a person reads in the ConfigMap: no `null`s (the manager's defaults apply), and no
    // `role` (with a lease the instances elect the primary; the field is for lease-less setups).
    strip_nulls(&mut value);
    if let Some(o) = value.as_object_mut() {
        o.remove("role");
    }
    let yaml = serde_yaml::to_string(&value).map_err(|e| BuildError::Render(e.to_string()))?;
    Ok(ConfigMap {
        metadata: cluster.meta(&cluster.names.config()),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), yaml)])),
        ..ConfigMap::default()
    })
}

/// What every instance of `cluster` runs with.
pub fn instance_config(cluster: &Cluster<'_>) -> Result<api::InstanceConfig, BuildError> {
    let spec = cluster.spec();
    let names = &cluster.names;
    let file = |p: String| Some(PathBuf::from(p));
    let tls_cert = PathBuf::from(paths::tls_file("tls.crt"));
    let tls_key = PathBuf::from(paths::tls_file("tls.key"));
    let tls_ca = file(paths::tls_file("ca.crt"));
    let members = (1..=spec.instances.max(1))
        .map(|n| {
            let host = names.instance_host(n);
            api::Member {
                name: names.instance(n),
                api: format!("https://{host}:{API_PORT}"),
                host,
                port: PG_PORT as u32,
            }
        })
        .collect();
    let (database, owner) = match spec.bootstrap.as_ref().and_then(|b| b.initdb.as_ref()) {
        Some(i) => (i.database.clone(), i.owner.clone()),
        None => ("app".to_owned(), "app".to_owned()),
    };
    let recovery = spec.bootstrap.as_ref().and_then(|b| b.recovery.as_ref()).map(|r| api::RecoverySpec {
        store: store(&r.source),
        source_cluster: r.source_cluster.clone(),
        backup_id: r.backup_id.clone(),
        target: r.target.as_ref().map(|t| api::RecoveryTarget {
            time: t.time.clone(),
            lsn: t.lsn.clone(),
            xid: t.xid.clone(),
            name: t.name.clone(),
            immediate: t.immediate,
            inclusive: t.inclusive,
        }),
    });
    let metrics = api::MetricsSpec {
        queries_file: spec
            .monitoring
            .custom_queries
            .as_ref()
            .map(|q| PathBuf::from(format!("{}/{}", paths::QUERIES_DIR, q.key))),
        ..api::MetricsSpec::default()
    };
    Ok(api::InstanceConfig {
        name: None,
        cluster: Some(names.cluster.clone()),
        namespace: None,
        data_dir: PathBuf::from(paths::DATA_DIR),
        wal_dir: spec.wal_storage.as_ref().map(|_| PathBuf::from(paths::WAL_DIR)),
        run_dir: PathBuf::from(paths::RUN_DIR),
        bin_dir: None,
        os_user: "postgres".to_owned(),
        role: api::Role::Primary,
        primary: None,
        postgres: api::PostgresSpec {
            port: PG_PORT as u32,
            listen_addresses: "*".to_owned(),
            parameters: spec.postgresql.parameters.clone(),
            pg_hba: spec.postgresql.pg_hba.clone(),
            tls: Some(api::PostgresTlsSpec {
                cert_file: tls_cert.clone(),
                key_file: tls_key.clone(),
                ca_file: tls_ca.clone(),
            }),
            require_tls: spec.tls.require_tls,
        },
        api: api::ApiSpec {
            listen: format!("0.0.0.0:{API_PORT}"),
            token_file: file(paths::secret_file("token")),
            tls: Some(api::ApiTlsSpec {
                cert_file: tls_cert,
                key_file: tls_key,
                ca_file: tls_ca,
                client_auth: api::ClientAuth::None,
            }),
        },
        bootstrap: api::BootstrapSpec { database, owner, recovery, replica_source: replica_source(spec) },
        credentials: api::CredentialsSpec {
            superuser_password_file: file(paths::secret_file("superuser")),
            app_password_file: file(paths::secret_file("app")),
            replication_password_file: file(paths::secret_file("replication")),
        },
        shutdown: api::ShutdownSpec::default(),
        lease: Some(lease(&spec.ha)?),
        members,
        priority: 100,
        paused: false,
        synchronous: spec.synchronous.as_ref().map(|s| api::SynchronousSpec {
            number: s.number.max(0) as u32,
            data_durability: match s.data_durability {
                crd::DataDurability::Required => api::DataDurability::Required,
                crd::DataDurability::Preferred => api::DataDurability::Preferred,
            },
        }),
        metrics,
        backup: spec.backup.as_ref().map(|b| api::BackupSpec {
            store: store(&b.store),
            wal: api::WalSpec { compression: compression(b.compression), ..api::WalSpec::default() },
            base: api::BaseBackupSpec { compression: compression(b.compression), ..api::BaseBackupSpec::default() },
            retention: b.retention.as_ref().map(|r| api::RetentionSpec {
                recovery_window_days: r.recovery_window_days.map(|d| d.max(0) as u32),
                count: r.count.map(|c| c.max(0) as u32),
            }),
            schedule: b.schedule.clone(),
        }),
    })
}

fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.retain(|_, v| !v.is_null());
            o.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The Kubernetes lease with the spec's timings. Built through serde: the contract's
/// `LeaseSpec` has a test-only field in test builds of the workspace.
fn lease(ha: &crd::HighAvailability) -> Result<api::LeaseSpec, BuildError> {
    serde_json::from_value(serde_json::json!({
        "backend": "kubernetes",
        "leaseDurationSeconds": ha.lease_duration_seconds,
        "renewDeadlineSeconds": ha.renew_deadline_seconds,
        "retryPeriodSeconds": ha.retry_period_seconds,
        "fenceBudgetSeconds": ha.fence_budget_seconds,
        "failsafe": ha.failsafe,
    }))
    .map_err(|e| BuildError::Render(format!("lease: {e}")))
}

fn compression(c: Compression) -> api::Compression {
    match c {
        Compression::Zstd => api::Compression::Zstd,
        Compression::Lz4 => api::Compression::Lz4,
        Compression::Gzip => api::Compression::Gzip,
        Compression::None => api::Compression::None,
    }
}

/// An object store with its Secret keys replaced by the files they are projected to.
fn store(s: &ObjectStore) -> api::StoreSpec {
    let file =
        |sel: &Option<crd::SecretKeySelector>| sel.as_ref().map(|k| PathBuf::from(paths::backup_file(&k.name, &k.key)));
    api::StoreSpec {
        destination: s.destination.clone(),
        s3: s.s3.as_ref().map(|s3| api::S3Spec {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            access_key_id_file: file(&s3.access_key_id),
            secret_access_key_file: file(&s3.secret_access_key),
            session_token_file: file(&s3.session_token),
            ca_file: file(&s3.ca),
            virtual_hosted_style: false,
        }),
        gcs: s.gcs.as_ref().map(|g| api::GcsSpec { service_account_file: file(&g.service_account) }),
        azure: s.azure.as_ref().map(|a| api::AzureSpec {
            account_name: a.account_name.clone(),
            account_key_file: file(&a.account_key),
            sas_token_file: file(&a.sas_token),
            endpoint: a.endpoint.clone(),
        }),
        encryption: s
            .encryption_key
            .as_ref()
            .map(|k| api::EncryptionSpec { key_file: PathBuf::from(paths::backup_file(&k.name, &k.key)) }),
    }
}

/// Every Secret key of the spec's object stores, for the pod's projected volume.
pub fn backup_secret_keys(spec: &crd::PostgresClusterSpec) -> Vec<crd::SecretKeySelector> {
    let mut keys = Vec::new();
    let stores = spec
        .backup
        .iter()
        .map(|b| &b.store)
        .chain(spec.bootstrap.iter().filter_map(|b| b.recovery.as_ref()).map(|r| &r.source));
    for s in stores {
        if let Some(s3) = &s.s3 {
            keys.extend(
                [&s3.access_key_id, &s3.secret_access_key, &s3.session_token, &s3.ca].into_iter().flatten().cloned(),
            );
        }
        if let Some(g) = &s.gcs {
            keys.extend(g.service_account.iter().cloned());
        }
        if let Some(a) = &s.azure {
            keys.extend([&a.account_key, &a.sas_token].into_iter().flatten().cloned());
        }
        keys.extend(s.encryption_key.iter().cloned());
    }
    keys.sort_by(|a, b| (&a.name, &a.key).cmp(&(&b.name, &b.key)));
    keys.dedup();
    keys
}
