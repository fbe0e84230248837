//! `InstanceConfig`: everything one instance manager needs to know, in one YAML document.
//!
//! Precedence when the manager starts: command-line flags, then the environment
//! (`POD_NAME`, `POD_NAMESPACE`, `CLUSTER_NAME`), then this file, then the defaults below.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::backup::{BackupSpec, RecoverySpec};

/// Default `lease.leaseDurationSeconds` (client-go's). The one definition of every lease timing
/// default: `LeaseTiming::default()` and the tests' default profile are built from these.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default `lease.renewDeadlineSeconds` (client-go's).
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Default `lease.retryPeriodSeconds` (client-go's).
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Default `lease.fenceBudgetSeconds`; also the fence budget of an instance without a lease.
pub const DEFAULT_FENCE_BUDGET: Duration = Duration::from_secs(2);
/// Default `runDir`, and the CLI's default directory of `manager.sock`.
pub const DEFAULT_RUN_DIR: &str = "/run/pgwarden";
/// Default `postgres.port` and member port.
pub const DEFAULT_PG_PORT: u16 = 5432;

/// The whole configuration of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceConfig {
    /// Instance name (the pod name in Kubernetes, `POD_NAME`). A DNS label.
    #[serde(default)]
    pub name: Option<String>,
    /// Cluster name (`CLUSTER_NAME`). A DNS label; also Postgres' `cluster_name`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Kubernetes namespace (`POD_NAMESPACE`); informational outside Kubernetes.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Postgres data directory. Must not itself be a mount point: bootstrap builds the
    /// directory beside it and renames it into place, so a crash never leaves half a data dir.
    pub data_dir: PathBuf,
    /// The directory of `pg_wal` on a volume of its own (CloudNativePG's `walStorage`): a
    /// subdirectory of the WAL volume's mount, like `dataDir`, and for the same reason — the
    /// manager builds it beside its final place and renames it there, so it must not itself be
    /// a mount point. `<dataDir>/pg_wal` is then a symbolic link to it. Neither may contain the
    /// other. Absent: `pg_wal` inside `dataDir`. Set it before the first start: an existing data
    /// directory whose `pg_wal` is not a link to this directory is refused, never moved.
    #[serde(default)]
    pub wal_dir: Option<PathBuf>,
    /// Directory for Unix sockets (Postgres' and the manager's) and runtime files.
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// Directory holding `postgres`, `initdb`, `pg_basebackup`, `pg_controldata`. When unset:
    /// the directory of `postgres` found on `PATH` (symlinks resolved).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// The OS user Postgres runs as when the manager itself runs as root (Postgres refuses
    /// root). Ignored when the manager is not root: Postgres then runs as the manager's user.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// The fixed role of an instance without a `lease` (`primary`, or `replica` of `primary`).
    /// With a `lease` the election decides the role and this field is not used.
    #[serde(default)]
    pub role: Role,
    /// The primary to stream from when `role` is `replica`.
    #[serde(default)]
    pub primary: Option<PrimaryEndpoint>,
    /// Postgres settings.
    #[serde(default)]
    pub postgres: PostgresSpec,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiSpec,
    /// What a freshly initialised primary creates.
    #[serde(default)]
    pub bootstrap: BootstrapSpec,
    /// Password files (Kubernetes Secrets mounted as files).
    #[serde(default)]
    pub credentials: CredentialsSpec,
    /// Shutdown escalation.
    #[serde(default)]
    pub shutdown: ShutdownSpec,
    /// Leader election through a lease. Absent: the role comes from `role` and nothing fails
    /// over (a single instance, or tests of the foundation).
    #[serde(default)]
    pub lease: Option<LeaseSpec>,
    /// Every member of the cluster, this instance included: how peers reach each other's API
    /// and Postgres. Rendered by the operator in Kubernetes; listed by hand outside it. Edits
    /// apply without a restart; an instance that an edit leaves out (it is being removed)
    /// never takes the lease again.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Failover priority: among replicas with the same WAL position the highest wins; 0 never
    /// becomes primary automatically.
    #[serde(default = "default_priority")]
    pub priority: u32,
    /// Maintenance: no automatic failover while true (switchover and promote still work).
    #[serde(default)]
    pub paused: bool,
    /// Synchronous replication: every acknowledged commit is on `number` published standbys.
    #[serde(default)]
    pub synchronous: Option<SynchronousSpec>,
    /// The Prometheus endpoint (`:9187/metrics`).
    #[serde(default)]
    pub metrics: super::MetricsSpec,
    /// WAL archive and base backups to an object store. Absent: no archive.
    #[serde(default)]
    pub backup: Option<BackupSpec>,
}

/// Synchronous replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SynchronousSpec {
    /// How many standbys must have every acknowledged commit.
    pub number: u32,
    /// `required` (default): commits wait rather than run without their standbys.
    /// `preferred`: a dead synchronous standby is dropped after `lease.leaseDurationSeconds`
    /// (unpublished first), and the degradation is logged.
    #[serde(default)]
    pub data_durability: DataDurability,
}

/// What a synchronous cluster does when its standbys are gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataDurability {
    /// Commits wait.
    #[default]
    Required,
    /// Fall back to fewer standbys after a timeout.
    Preferred,
}

/// Where and how the lease is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseSpec {
    /// `kubernetes` (a coordination.k8s.io Lease) or `file` (a JSON file shared on one host).
    pub backend: LeaseBackend,
    /// The lease file (backend `file`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The Lease object's name (backend `kubernetes`); default `<cluster>-primary`.
    #[serde(default)]
    pub name: Option<String>,
    /// How long a lease lasts without renewal.
    #[serde(default = "default_lease_duration")]
    pub lease_duration_seconds: f64,
    /// How long the holder keeps trying to renew before it fences itself.
    #[serde(default = "default_renew_deadline")]
    pub renew_deadline_seconds: f64,
    /// How often the lease is read and renewed.
    #[serde(default = "default_retry_period")]
    pub retry_period_seconds: f64,
    /// Time allowed for fencing (stopping Postgres) before anyone else may acquire.
    #[serde(default = "default_fence_budget")]
    pub fence_budget_seconds: f64,
    /// Failsafe: while the lease store is unavailable (timeouts, 5xx — not 403 or 409), the
    /// holder stays writable past `renewDeadline` as long as every member acknowledges it over
    /// the peer API each retry period (needs `api.tokenFile`, shared by the members). On by
    /// default: an API-server outage then costs no writes while the cluster is healthy.
    #[serde(default = "default_failsafe")]
    pub failsafe: bool,
    /// Testing only, with this crate's `testkit` feature (enabled by the instance manager's): a
    /// JSON file describing a fault to inject into every lease operation (the manager's
    /// `lease::FaultyStore`). Not part of the production contract: a build without the feature
    /// refuses the field as unknown.
    #[cfg(feature = "testkit")]
    #[serde(default)]
    pub fault_file: Option<PathBuf>,
}

fn default_failsafe() -> bool {
    true
}

/// Lease backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LeaseBackend {
    /// `coordination.k8s.io/v1` Lease `<cluster>-primary`.
    Kubernetes,
    /// A JSON file under `flock`.
    File,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    /// Instance name.
    pub name: String,
    /// Host (or address) of its Postgres, as the other members reach it.
    pub host: String,
    /// Its Postgres port.
    #[serde(default = "default_pg_port")]
    pub port: u32,
    /// Base URL of its HTTP API (`http://host:8000`, or `https://host:8000` with `api.tls`).
    pub api: String,
}

/// The role an instance is configured to run in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes.
    #[default]
    Primary,
    /// Streams from `primary` and serves reads.
    Replica,
}

/// Where a replica finds its primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrimaryEndpoint {
    /// Host name or address of the primary.
    pub host: String,
    /// Postgres port of the primary.
    #[serde(default = "default_pg_port")]
    pub port: u32,
}

/// Postgres settings of the instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresSpec {
    /// TCP port Postgres listens on (kept as u32 so that 70000 is reported, not a parse error).
    #[serde(default = "default_pg_port")]
    pub port: u32,
    /// Postgres' `listen_addresses`.
    #[serde(default = "default_listen_addresses")]
    pub listen_addresses: String,
    /// User parameters (`shared_buffers: 256MB`). Values may be strings, numbers or booleans.
    /// Parameters pgwarden manages itself are refused with a hint.
    #[serde(default, deserialize_with = "scalar_map")]
    #[schemars(schema_with = "scalar_map_schema")]
    pub parameters: BTreeMap<String, String>,
    /// Extra `pg_hba.conf` lines, placed before pgwarden's own rules.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// TLS for clients and replication (`ssl = on`). Absent: Postgres serves plain TCP only.
    #[serde(default)]
    pub tls: Option<PostgresTlsSpec>,
    /// pgwarden's `pg_hba.conf` rules accept TCP connections over TLS only (`hostssl`); plain
    /// TCP is refused. Needs `tls`.
    #[serde(default)]
    pub require_tls: bool,
}

/// Postgres' server certificate (a mounted Secret such as cert-manager's `tls.crt`/`tls.key`/
/// `ca.crt`). The files are copied into the run directory, owned by Postgres' OS user (the key
/// with mode 0600, which Postgres insists on), and copied again with a reload when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostgresTlsSpec {
    /// The server certificate chain (PEM), naming every host clients and replicas connect to.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA (PEM). Postgres verifies client certificates with it (`ssl_ca_file`), and
    /// replication and peer connections verify the other members' certificates with it
    /// (`sslmode=verify-full`). Without it they use `sslmode=prefer`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiSpec {
    /// `address:port` the API listens on over TCP.
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// File holding the bearer token required by the mutating endpoints over TCP (a mounted
    /// Secret). Without it they are available on the local socket only.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTPS on `listen` (the Unix sockets stay plain HTTP). Absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<ApiTlsSpec>,
}

/// The HTTP API's certificate. The files are watched: a rotated certificate is used for new
/// connections without a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiTlsSpec {
    /// The server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA (PEM) that signed the members' API certificates: peers' `/status` calls verify
    /// `https://` members with it, and client certificates are verified against it.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificates: `none` (default), `optional` (a client certificate signed by
    /// `caFile` authorises the mutating endpoints like the bearer token), or `required` (every
    /// connection needs one; Kubernetes' HTTP probes cannot present one).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether the API asks for client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Never.
    #[default]
    None,
    /// Asked for; a connection without one still gets the read-only endpoints.
    Optional,
    /// Every connection must present one.
    Required,
}

/// What a freshly initialised primary creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapSpec {
    /// The application database.
    #[serde(default = "default_app")]
    pub database: String,
    /// Its owner, a login role.
    #[serde(default = "default_app")]
    pub owner: String,
    /// Build the first primary from a backup (restore and point-in-time recovery) instead of
    /// `initdb`.
    #[serde(default)]
    pub recovery: Option<RecoverySpec>,
    /// Where a new replica gets its data: `primary` (`pg_basebackup`, the default) or `backup`
    /// (the latest base backup plus archived WAL, sparing the primary; needs `backup`).
    #[serde(default)]
    pub replica_source: ReplicaSource,
}

/// Where a new replica's data comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaSource {
    /// `pg_basebackup` from the primary.
    #[default]
    Primary,
    /// The latest base backup and the WAL archive.
    Backup,
}

/// Password files. Each file holds the password alone (a trailing newline is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsSpec {
    /// Password of the `postgres` superuser. Without it the superuser can log in only
    /// over the local socket (peer authentication).
    #[serde(default)]
    pub superuser_password_file: Option<PathBuf>,
    /// Password of the application owner (`bootstrap.owner`).
    #[serde(default)]
    pub app_password_file: Option<PathBuf>,
    /// Password of `streaming_replica`, the role replicas connect as. Required for replicas.
    #[serde(default)]
    pub replication_password_file: Option<PathBuf>,
}

/// How a stop escalates: smart shutdown, then fast after `smartTimeoutSeconds`, then
/// immediate after `stopTimeoutSeconds` (counted from the start of the stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShutdownSpec {
    /// Seconds of smart shutdown (sessions may finish) before a fast one.
    #[serde(default = "default_smart_timeout")]
    pub smart_timeout_seconds: u64,
    /// Seconds from the start of the stop before an immediate shutdown.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_seconds: u64,
}

impl Default for PostgresSpec {
    fn default() -> Self {
        Self {
            port: default_pg_port(),
            listen_addresses: default_listen_addresses(),
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            tls: None,
            require_tls: false,
        }
    }
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self { listen: default_api_listen(), token_file: None, tls: None }
    }
}

impl Default for BootstrapSpec {
    fn default() -> Self {
        Self { database: default_app(), owner: default_app(), recovery: None, replica_source: ReplicaSource::Primary }
    }
}

impl Default for ShutdownSpec {
    fn default() -> Self {
        Self { smart_timeout_seconds: default_smart_timeout(), stop_timeout_seconds: default_stop_timeout() }
    }
}

fn default_priority() -> u32 {
    100
}
fn default_lease_duration() -> f64 {
    DEFAULT_LEASE_DURATION.as_secs_f64()
}
fn default_renew_deadline() -> f64 {
    DEFAULT_RENEW_DEADLINE.as_secs_f64()
}
fn default_retry_period() -> f64 {
    DEFAULT_RETRY_PERIOD.as_secs_f64()
}
fn default_fence_budget() -> f64 {
    DEFAULT_FENCE_BUDGET.as_secs_f64()
}
fn default_run_dir() -> PathBuf {
    PathBuf::from(DEFAULT_RUN_DIR)
}
fn default_os_user() -> String {
    "postgres".into()
}
fn default_pg_port() -> u32 {
    u32::from(DEFAULT_PG_PORT)
}
fn default_listen_addresses() -> String {
    "*".into()
}
fn default_api_listen() -> String {
    "0.0.0.0:8000".into()
}
fn default_app() -> String {
    "app".into()
}
fn default_smart_timeout() -> u64 {
    15
}
fn default_stop_timeout() -> u64 {
    30
}

/// The schema of what [`scalar_map`] accepts.
fn scalar_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    })
}

/// Accepts `{name: value}` where values are any YAML scalar, keeping them as Postgres text.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::Text(s) => s,
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => if b { "on" } else { "off" }.to_string(),
            };
            (k, v)
        })
        .collect())
}
