//! `PostgresCluster.status`: written by the operator only, in the shape CloudNativePG's
//! tooling reads (`phase` strings, the `Ready` condition, `currentPrimary`, `instances`,
//! `readyInstances`, `topology`, `instancesStatus`), plus what each instance's `/status` says.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator last saw of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    /// CloudNativePG's phase strings: `Setting up primary`, `Creating a new replica`,
    /// `Cluster in healthy state`, `Failing over`, `Switchover in progress`,
    /// `Waiting for the instances to become active`, `Not enough disk space`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Why the cluster is in this phase, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_reason: Option<String>,
    /// `Ready`: True when every instance is ready and a primary holds the lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Instances (pods) that exist.
    #[serde(default)]
    pub instances: i32,
    /// Instances whose readiness probe passes.
    #[serde(default)]
    pub ready_instances: i32,
    /// The holder of the Lease `<cluster>-primary`: the primary, as the instances elected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// When `currentPrimary` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary_timestamp: Option<String>,
    /// The Lease's term (`leaseTransitions`): how many times the primary changed hands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_term: Option<i32>,
    /// The image the instances were created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The Service that routes to the primary (`<cluster>-rw`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_service: Option<String>,
    /// The Service that routes to the replicas (`<cluster>-ro`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_service: Option<String>,
    /// Instance names by state (`healthy`, `failed`), as CloudNativePG's `instancesStatus`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances_status: BTreeMap<String, Vec<String>>,
    /// Where the instances run.
    #[serde(default)]
    pub topology: Topology,
    /// What each instance's `/status` said at the last reconcile.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances_reported_state: BTreeMap<String, InstanceReport>,
    /// The end time of the latest completed base backup the primary reports (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// Its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup_id: Option<String>,
    /// When the primary takes the next scheduled base backup (`backup.schedule`; RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_backup: Option<String>,
    /// When the operator-managed server certificate expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate_expiration: Option<String>,
    /// Volumes being grown after `storage.size` or `walStorage.size` grew, by PVC; empty when
    /// none is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volume_resizes: BTreeMap<String, VolumeResize>,
    /// The last request of each annotation (`pgwarden.io/switchover`, `fence`, `unfence`,
    /// `restart`) and how it ended.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, RequestOutcome>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Instance → node, and how many nodes are used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// Each scheduled instance's node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, String>,
    /// How many distinct nodes run an instance.
    #[serde(default)]
    pub nodes_used: i32,
    /// Whether no two instances share a node.
    #[serde(default)]
    pub success_fully_spread: bool,
}

/// One instance, as its `/status` described it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    /// `primary`, `replica`, `fenced`, ... (the instance's own word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whether it says it is the primary (CloudNativePG's `isPrimary`).
    #[serde(default)]
    pub is_primary: bool,
    /// Its timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_line_id: Option<i64>,
    /// Its current WAL position (written on a primary, replayed on a replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// How far it is behind the primary, in bytes (replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// Why its `/status` could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A PVC on its way to a larger size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResize {
    /// The size asked for.
    pub requested: String,
    /// The size the volume has now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
    /// `Resizing`, `FileSystemResizePending` (the filesystem grows at the pod's next start) or
    /// `Refused` (the StorageClass does not allow expansion).
    pub state: String,
    /// Details, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How a request made through an annotation ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestOutcome {
    /// The annotation's value.
    pub value: String,
    /// `Done` or `Refused`.
    pub result: String,
    /// What happened, for a person.
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
}
