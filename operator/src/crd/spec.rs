//! `PostgresCluster.spec`: what a user asks for. Every field says its default; the API server
//! refuses what cannot work (schema limits and the CEL rules of [`super::rules`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration, TopologySpreadConstraint};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rules;
use super::status::PostgresClusterStatus;

/// The image used when `spec.image` is unset.
pub const DEFAULT_IMAGE: &str = "pgwarden/postgres:15";

/// A highly available PostgreSQL cluster: `instances` pods that elect their primary through a
/// Lease, with Secrets, TLS, Services and PodDisruptionBudgets made by the operator.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pgwarden.io",
    version = "v1alpha1",
    kind = "PostgresCluster",
    plural = "postgresclusters",
    shortname = "pgc",
    namespaced,
    status = "PostgresClusterStatus",
    validation = kube::core::Rule::new(rules::NAME_RULE).message(rules::NAME_MESSAGE),
    printcolumn = r#"{"name":"Instances","type":"integer","jsonPath":".status.instances","description":"Instances that exist"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyInstances","description":"Instances that are ready"}"#,
    printcolumn = r#"{"name":"Primary","type":"string","jsonPath":".status.currentPrimary","description":"The holder of the primary Lease"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"What the cluster is doing"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::spec_rules()))]
pub struct PostgresClusterSpec {
    /// Number of instances (one primary, the rest replicas). Default 1; at least 1.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 99))]
    pub instances: i32,
    /// The instance image: the instance manager and PostgreSQL. Default `pgwarden/postgres:15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// How the primary is updated when its pod must be re-created (a new image, resources, a
    /// parameter that needs a restart): `unsupervised` (default: a switchover to the most
    /// caught-up replica, then the old primary is re-created) or `supervised` (the replicas are
    /// updated, then the operator waits for a person to switch over with the
    /// `pgwarden.io/switchover` annotation).
    #[serde(default)]
    pub primary_update_strategy: PrimaryUpdateStrategy,
    /// `imagePullPolicy` of the instances. Default `IfNotPresent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// PostgreSQL configuration.
    #[serde(default)]
    pub postgresql: PostgresConfiguration,
    /// How the first primary is made: `initdb` (the default) or `recovery` from a backup.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// A Secret of type `kubernetes.io/basic-auth` (`username: postgres`, `password`) for the
    /// superuser. Default: `<cluster>-superuser`, generated once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret: Option<LocalObjectReference>,
    /// The data volume of every instance (one PVC each, `<cluster>-N`).
    pub storage: Storage,
    /// A volume of its own for `pg_wal` (one PVC each, `<cluster>-N-wal`), so that WAL
    /// bursts cannot fill the data volume and WAL writes get their own I/O. Absent: WAL on the
    /// data volume. Only at creation: it cannot be added to or removed from an existing cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<Storage>,
    /// What happens to an instance's PVCs when it is removed.
    #[serde(default)]
    pub pvc_retention_policy: PvcRetentionPolicy,
    /// Where a new replica's data comes from (a scale-up, a lost PVC): `auto` (default: the
    /// latest base backup plus archived WAL when `backup` is set, which spares the primary,
    /// else `pg_basebackup` from the primary), `primary`, or `backup` (needs `backup`). While
    /// the store holds no usable base backup yet, the primary is cloned.
    #[serde(default)]
    pub replica_source: ReplicaSource,
    /// CPU and memory of the Postgres container. Default: none (BestEffort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where the instances run.
    #[serde(default)]
    pub affinity: Affinity,
    /// Pod topology spread constraints, as in a Pod spec. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Synchronous replication. Absent: asynchronous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous: Option<Synchronous>,
    /// Leader election timings and failsafe.
    #[serde(default)]
    pub ha: HighAvailability,
    /// Continuous WAL archiving and base backups to an object store. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    /// TLS of Postgres and of the instance API. Default: certificates made by the operator.
    #[serde(default)]
    pub tls: Tls,
    /// Prometheus metrics.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// The three client Services.
    #[serde(default)]
    pub services: Services,
}

fn default_instances() -> i32 {
    1
}

/// A reference to an object in the cluster's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectReference {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One key of a Secret in the cluster's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresConfiguration {
    /// `postgresql.conf` parameters (`shared_buffers: 256MB`), as strings. Parameters pgwarden
    /// manages itself (ports, replication, archiving, TLS files) are refused by the instances
    /// with a message naming them. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    /// Extra `pg_hba.conf` lines, placed before pgwarden's own rules. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pg_hba: Vec<String>,
}

/// How the first primary is made: exactly one of `initdb` and `recovery`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::bootstrap_rules()))]
pub struct Bootstrap {
    /// A new, empty cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitDb>,
    /// A restore from a base backup and archived WAL, to the end or to a point in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

/// `initdb`: the application database and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitDb {
    /// The application database. Default `app`.
    #[serde(default = "default_app")]
    pub database: String,
    /// Its owner, a login role. Default `app`.
    #[serde(default = "default_app")]
    pub owner: String,
    /// A `kubernetes.io/basic-auth` Secret with the owner's `username` and `password`.
    /// Default: `<cluster>-app`, generated once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalObjectReference>,
}

impl Default for InitDb {
    fn default() -> Self {
        Self { database: default_app(), owner: default_app(), secret: None }
    }
}

fn default_app() -> String {
    "app".into()
}

/// Restore from a backup store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// The store holding the backups.
    pub source: ObjectStore,
    /// The cluster that took them. Default: this cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster: Option<String>,
    /// The backup to restore. Default: the latest that ends before the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Where replay stops. Default: the end of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecoveryTarget>,
}

/// Where replay stops: at most one of `time`, `lsn`, `xid`, `name` and `immediate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::one_target()))]
pub struct RecoveryTarget {
    /// A timestamp (RFC 3339, `2026-11-30T12:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// A WAL position (`0/3000060`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// A transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<String>,
    /// A restore point made with `pg_create_restore_point`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stop as soon as the backup is consistent. Default false.
    #[serde(default)]
    pub immediate: bool,
    /// Whether the target itself is included. Default true.
    #[serde(default = "default_true")]
    pub inclusive: bool,
}

fn default_true() -> bool {
    true
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::storage_rules()))]
pub struct Storage {
    /// Its size: a whole number of `Mi`, `Gi` or `Ti` (`10Gi`). Required. It may grow, never
    /// shrink.
    #[schemars(length(min = 3, max = 11))]
    pub size: String,
    /// The StorageClass. Default: the cluster's default class. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// How the primary is updated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrimaryUpdateStrategy {
    /// The operator switches over, then re-creates the old primary.
    #[default]
    Unsupervised,
    /// The operator waits for a person to switch over.
    Supervised,
}

/// Where a new replica's data comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaSource {
    /// A backup when the cluster has a backup store, else the primary.
    #[default]
    Auto,
    /// `pg_basebackup` from the primary.
    Primary,
    /// The latest base backup and the WAL archive.
    Backup,
}

/// What happens to PVCs when their instance goes (as a StatefulSet's
/// `persistentVolumeClaimRetentionPolicy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetentionPolicy {
    /// When `instances` is lowered: `Delete` (default) removes the PVCs of the instances that
    /// go (a later scale-up clones them afresh); `Retain` keeps them (a later scale-up reuses
    /// them, and their instance catches up or rewinds).
    #[serde(default)]
    pub when_scaled: RetentionAction,
    /// When the cluster is deleted: `Delete` (default: the PVCs are owned by the cluster and go
    /// with it) or `Retain` (they stay, without owner, for a person to reuse or delete).
    #[serde(default)]
    pub when_deleted: RetentionAction,
}

/// Keep or remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetentionAction {
    /// Remove the PVCs.
    #[default]
    Delete,
    /// Keep them.
    Retain,
}

/// Scheduling of the instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    /// Keep instances apart on `topologyKey`. Default true.
    #[serde(default = "default_true")]
    pub enable_pod_anti_affinity: bool,
    /// `preferred` (default: a cluster still schedules on one node) or `required`.
    #[serde(default)]
    pub pod_anti_affinity_type: AntiAffinityType,
    /// The node label instances are spread over. Default `kubernetes.io/hostname`.
    #[serde(default = "default_topology_key")]
    pub topology_key: String,
    /// Nodes an instance may run on, by label. Default: any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the instances tolerate. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

impl Default for Affinity {
    fn default() -> Self {
        Self {
            enable_pod_anti_affinity: true,
            pod_anti_affinity_type: AntiAffinityType::Preferred,
            topology_key: default_topology_key(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

fn default_topology_key() -> String {
    "kubernetes.io/hostname".into()
}

/// How strongly instances are kept apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AntiAffinityType {
    /// The scheduler tries.
    #[default]
    Preferred,
    /// An instance stays Pending rather than share a node.
    Required,
}

/// Synchronous replication: every acknowledged commit is on `number` standbys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Synchronous {
    /// How many standbys confirm each commit. At least 1; fewer than `instances`.
    #[schemars(range(min = 1))]
    pub number: i32,
    /// `required` (default): commits wait for their standbys. `preferred`: a dead standby is
    /// dropped after the lease duration and the degradation is logged.
    #[serde(default)]
    pub data_durability: DataDurability,
}

/// What a synchronous cluster does without its standbys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataDurability {
    /// Commits wait.
    #[default]
    Required,
    /// Fewer standbys after a timeout.
    Preferred,
}

/// Leader election. The rules: `retryPeriod × 1.2 < renewDeadline` and
/// `renewDeadline + fenceBudget < leaseDuration`; a fast profile is 5/3/1 with a 1.5 s budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::timing_rules()))]
pub struct HighAvailability {
    /// How long the primary's lease lasts without renewal. Default 15.
    #[serde(default = "default_lease_duration")]
    #[schemars(range(min = 1.0, max = 600.0))]
    pub lease_duration_seconds: f64,
    /// How long the primary keeps trying to renew before it fences itself. Default 10.
    #[serde(default = "default_renew_deadline")]
    #[schemars(range(min = 0.5, max = 600.0))]
    pub renew_deadline_seconds: f64,
    /// How often the lease is read and renewed. Default 2.
    #[serde(default = "default_retry_period")]
    #[schemars(range(min = 0.1, max = 600.0))]
    pub retry_period_seconds: f64,
    /// Time allowed for fencing before anyone else may acquire. Default 2; at least 1.
    #[serde(default = "default_fence_budget")]
    #[schemars(range(min = 1.0, max = 600.0))]
    pub fence_budget_seconds: f64,
    /// Keep the primary writable through an API-server outage while every member confirms it
    /// over the instance API. Default true.
    #[serde(default = "default_true")]
    pub failsafe: bool,
}

impl Default for HighAvailability {
    fn default() -> Self {
        Self {
            lease_duration_seconds: default_lease_duration(),
            renew_deadline_seconds: default_renew_deadline(),
            retry_period_seconds: default_retry_period(),
            fence_budget_seconds: default_fence_budget(),
            failsafe: true,
        }
    }
}

fn default_lease_duration() -> f64 {
    pgwarden_contract::DEFAULT_LEASE_DURATION.as_secs_f64()
}
fn default_renew_deadline() -> f64 {
    pgwarden_contract::DEFAULT_RENEW_DEADLINE.as_secs_f64()
}
fn default_retry_period() -> f64 {
    pgwarden_contract::DEFAULT_RETRY_PERIOD.as_secs_f64()
}
fn default_fence_budget() -> f64 {
    pgwarden_contract::DEFAULT_FENCE_BUDGET.as_secs_f64()
}

/// Continuous archiving and base backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    /// Where WAL and base backups go, and how to reach it.
    pub store: ObjectStore,
    /// A cron expression (`min hour day month weekday`, UTC) for base backups, taken by the
    /// primary. Default: none (on demand only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// What to keep. Default: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Compression of WAL and base backups: `zstd` (default), `lz4`, `gzip` or `none`.
    #[serde(default)]
    pub compression: Compression,
}

/// An object store and its credentials, each from a Secret key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::one_store()))]
pub struct ObjectStore {
    /// `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. The cluster's
    /// objects go under `<prefix>/<cluster>/`.
    #[schemars(regex(pattern = r"^(s3|gs|az)://[^/]+(/.*)?$"))]
    pub destination: String,
    /// S3 and S3-compatible stores (MinIO, Ceph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3>,
    /// Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<Gcs>,
    /// Azure Blob Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<Azure>,
    /// Client-side encryption of everything stored: a Secret key holding 64 hexadecimal
    /// characters (`openssl rand -hex 32`). Losing it loses the backups. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<SecretKeySelector>,
}

/// S3 credentials and endpoint. Without keys: the pod's web identity (IRSA).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3 {
    /// The endpoint of an S3-compatible store (`https://minio.example:9000`). Default: AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region. Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<SecretKeySelector>,
    /// The secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<SecretKeySelector>,
    /// A session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretKeySelector>,
    /// CA certificates (PEM) to trust for a private endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKeySelector>,
}

/// Google Cloud Storage credentials. Without a key: the pod's workload identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gcs {
    /// A service account key (JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<SecretKeySelector>,
}

/// Azure Blob Storage credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Azure {
    /// The storage account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// The account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<SecretKeySelector>,
    /// A SAS token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token: Option<SecretKeySelector>,
    /// The endpoint of an Azure-compatible store (Azurite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// What to keep: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::one_retention()))]
pub struct Retention {
    /// Keep what recovers to any point of the last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub recovery_window_days: Option<i32>,
    /// Keep the last N base backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<i32>,
}

/// Compression of the archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd (fast, compact).
    #[default]
    Zstd,
    /// lz4 (fastest).
    Lz4,
    /// gzip (readable by other tools).
    Gzip,
    /// None.
    None,
}

/// TLS for Postgres and the instance API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`, as a cert-manager
    /// `Certificate` fills it) naming every Service and `*.<cluster>-headless.<namespace>.svc`.
    /// Default: `<cluster>-server`, made and renewed by the operator from its CA
    /// `<cluster>-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_secret: Option<LocalObjectReference>,
    /// Refuse plain TCP connections to Postgres (`hostssl` only). Default false.
    #[serde(default)]
    pub require_tls: bool,
}

/// Prometheus metrics (`:9187/metrics`, CloudNativePG's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Annotate the pods for Prometheus' pod discovery (`prometheus.io/scrape`). Default true.
    #[serde(default = "default_true")]
    pub scrape_annotations: bool,
    /// A ConfigMap key holding custom queries in CloudNativePG's format. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_queries: Option<ConfigMapKeySelector>,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self { scrape_annotations: true, custom_queries: None }
    }
}

/// One key of a ConfigMap in the cluster's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigMapKeySelector {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The client Services: `-rw` (the primary), `-ro` (replicas), `-r` (any ready instance).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Services {
    /// `<cluster>-rw`.
    #[serde(default)]
    pub rw: ServiceTemplate,
    /// `<cluster>-ro`.
    #[serde(default)]
    pub ro: ServiceTemplate,
    /// `<cluster>-r`.
    #[serde(default)]
    pub r: ServiceTemplate,
}

/// What may be set on a client Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTemplate {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ClusterIP", "NodePort", "LoadBalancer"]))]
    pub r#type: Option<String>,
    /// Annotations (a load balancer's settings). Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
