//! Instance `n`'s Pod, `<cluster>-N`, on its PVC (no StatefulSet: the operator re-creates a lost
//! Pod on the same PVC). The instance manager is PID 1; it learns its name, namespace and
//! address from the downward API. The Pod meets the Pod Security "restricted" profile: non-root
//! (uid 26, the image's `postgres`), read-only root filesystem, no capabilities, seccomp
//! `RuntimeDefault`, `fsGroup` so the volumes are the instance's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource, SeccompProfile,
    SecretProjection, SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeProjection,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Cluster, paths};
use crate::crd::AntiAffinityType;
use crate::names::{API_PORT, API_PORT_NAME, METRICS_PORT, METRICS_PORT_NAME, PG_PORT, PG_PORT_NAME};

/// The uid and gid of `postgres` in the image (CloudNativePG's and Red Hat's).
pub const POSTGRES_UID: i64 = 26;

/// How long a stopping pod has: the instance manager hands the lease over (well under a second
/// in a healthy cluster), then stops Postgres with its own escalation (smart, fast after 15 s,
/// immediate at 30 s). The margin covers a handover that waits for its target.
pub const TERMINATION_GRACE_SECONDS: i64 = 30 + 30;

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(API_PORT_NAME.into()),
            scheme: Some("HTTPS".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..VolumeMount::default() }
}

fn secret_item(secret: &str, key: &str, path: &str) -> VolumeProjection {
    VolumeProjection {
        secret: Some(SecretProjection {
            name: secret.into(),
            items: Some(vec![KeyToPath { key: key.into(), path: path.into(), ..KeyToPath::default() }]),
            ..SecretProjection::default()
        }),
        ..VolumeProjection::default()
    }
}

/// The Secrets the instances read credentials from: the spec's or the generated ones.
pub fn superuser_secret(cluster: &Cluster<'_>) -> String {
    cluster.spec().superuser_secret.as_ref().map_or_else(|| cluster.names.superuser_secret(), |s| s.name.clone())
}

/// The application owner's Secret: the spec's or the generated one.
pub fn app_secret(cluster: &Cluster<'_>) -> String {
    cluster
        .spec()
        .bootstrap
        .as_ref()
        .and_then(|b| b.initdb.as_ref())
        .and_then(|i| i.secret.as_ref())
        .map_or_else(|| cluster.names.app_secret(), |s| s.name.clone())
}

/// The server certificate's Secret: the spec's or the operator's.
pub fn server_secret(cluster: &Cluster<'_>) -> String {
    cluster.spec().tls.server_secret.as_ref().map_or_else(|| cluster.names.server_secret(), |s| s.name.clone())
}

fn volumes(cluster: &Cluster<'_>, n: i32) -> (Vec<Volume>, Vec<VolumeMount>) {
    let names = &cluster.names;
    let spec = cluster.spec();
    let mut volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.instance(n),
                ..PersistentVolumeClaimVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume { name: "run".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        Volume {
            name: "shm".into(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), ..EmptyDirVolumeSource::default() }),
            ..Volume::default()
        },
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: names.config(), ..ConfigMapVolumeSource::default() }),
            ..Volume::default()
        },
        Volume {
            name: "secrets".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(vec![
                    secret_item(&superuser_secret(cluster), "password", "superuser"),
                    secret_item(&app_secret(cluster), "password", "app"),
                    secret_item(&names.replication_secret(), "password", "replication"),
                    secret_item(&names.token_secret(), "token", "token"),
                ]),
            }),
            ..Volume::default()
        },
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(server_secret(cluster)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("data", paths::DATA_MOUNT, false),
        mount("run", paths::RUN_DIR, false),
        mount("shm", "/dev/shm", false),
        mount("config", paths::CONFIG_DIR, true),
        mount("secrets", paths::SECRETS_DIR, true),
        mount("tls", paths::TLS_DIR, true),
    ];
    if spec.wal_storage.is_some() {
        volumes.push(Volume {
            name: "wal".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.wal_volume(n),
                ..PersistentVolumeClaimVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("wal", paths::WAL_MOUNT, false));
    }
    let backup_keys = super::config::backup_secret_keys(spec);
    if !backup_keys.is_empty() {
        volumes.push(Volume {
            name: "backup-credentials".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(
                    backup_keys
                        .iter()
                        .map(|k| secret_item(&k.name, &k.key, &format!("{}/{}", k.name, k.key)))
                        .collect(),
                ),
            }),
            ..Volume::default()
        });
        mounts.push(mount("backup-credentials", paths::BACKUP_DIR, true));
    }
    if let Some(q) = &spec.monitoring.custom_queries {
        volumes.push(Volume {
            name: "queries".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: q.name.clone(),
                items: Some(vec![KeyToPath { key: q.key.clone(), path: q.key.clone(), ..KeyToPath::default() }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("queries", paths::QUERIES_DIR, true));
    }
    (volumes, mounts)
}

fn affinity(cluster: &Cluster<'_>) -> Option<Affinity> {
    let a = &cluster.spec().affinity;
    if !a.enable_pod_anti_affinity {
        return None;
    }
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(cluster.names.selector()),
            ..LabelSelector::default()
        }),
        topology_key: a.topology_key.clone(),
        ..PodAffinityTerm::default()
    };
    let anti = match a.pod_anti_affinity_type {
        AntiAffinityType::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }]),
            ..PodAntiAffinity::default()
        },
        AntiAffinityType::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
    };
    Some(Affinity { pod_anti_affinity: Some(anti), ..Affinity::default() })
}

/// Instance `n`'s Pod.
pub fn pod(cluster: &Cluster<'_>, n: i32) -> Pod {
    let names = &cluster.names;
    let spec = cluster.spec();
    let (volumes, volume_mounts) = volumes(cluster, n);
    let mut metadata = cluster.meta_with(&names.instance(n), names.instance_labels(n));
    if spec.monitoring.scrape_annotations {
        metadata.annotations = Some(BTreeMap::from([
            ("prometheus.io/scrape".to_owned(), "true".to_owned()),
            ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
        ]));
    }
    let container = Container {
        name: "postgres".into(),
        image: Some(cluster.image()),
        image_pull_policy: Some(spec.image_pull_policy.clone().unwrap_or_else(|| "IfNotPresent".into())),
        env: Some(vec![
            env_from_field("POD_NAME", "metadata.name"),
            env_from_field("POD_NAMESPACE", "metadata.namespace"),
            env_from_field("POD_IP", "status.podIP"),
            env("CLUSTER_NAME", &names.cluster),
            env("PGWARDEN_CONFIG", paths::CONFIG_FILE),
        ]),
        ports: Some(vec![
            port(PG_PORT_NAME, PG_PORT),
            port(API_PORT_NAME, API_PORT),
            port(METRICS_PORT_NAME, METRICS_PORT),
        ]),
        // A clone or a restore of a large database takes as long as it takes: the startup
        // probe allows an hour (CloudNativePG's default `startDelay`), then liveness takes over.
        startup_probe: Some(probe("/healthz", 10, 360)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };
    Pod {
        metadata,
        spec: Some(PodSpec {
            hostname: Some(names.instance(n)),
            subdomain: Some(names.headless()),
            service_account_name: Some(names.service_account()),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(POSTGRES_UID),
                run_as_group: Some(POSTGRES_UID),
                fs_group: Some(POSTGRES_UID),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                run_as_non_root: Some(true),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
                ..PodSecurityContext::default()
            }),
            affinity: affinity(cluster),
            node_selector: (!spec.affinity.node_selector.is_empty()).then(|| spec.affinity.node_selector.clone()),
            tolerations: (!spec.affinity.tolerations.is_empty()).then(|| spec.affinity.tolerations.clone()),
            topology_spread_constraints: (!spec.topology_spread_constraints.is_empty())
                .then(|| spec.topology_spread_constraints.clone()),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}
