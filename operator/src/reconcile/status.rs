//! The status, computed without I/O from what one reconcile saw: the Pods (existence,
//! readiness, node), the Lease (the holder is `currentPrimary`; its `leaseTransitions` the
//! term) and each instance's `/status`. The phase strings and the `Ready` and
//! `ContinuousArchiving` ([`super::archiving`]) conditions are CloudNativePG's, so tooling
//! written for it reads ours. Equal inputs give an equal status,
//! and an equal status is not written.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use pgwarden_contract::{InstanceRole, InstanceStatus, TransitionKind};

use crate::crd::{InstanceReport, PostgresClusterStatus, Topology};
use crate::names::Names;

/// CloudNativePG's phase: every instance ready, a primary elected.
pub const PHASE_HEALTHY: &str = "Cluster in healthy state";
/// No primary has been elected yet.
pub const PHASE_SETTING_UP: &str = "Setting up primary";
/// Instances are missing and being created.
pub const PHASE_CREATING_REPLICA: &str = "Creating a new replica";
/// Instances exist but some are not ready.
pub const PHASE_WAITING: &str = "Waiting for the instances to become active";
/// The primary is gone and no instance holds the lease yet, or the new holder is not ready.
pub const PHASE_FAILING_OVER: &str = "Failing over";
/// Pods are being re-created for a new spec (CloudNativePG's).
pub const PHASE_UPGRADING: &str = "Upgrading cluster";
/// A rolling update waits for a person to switch over (`supervised`; CloudNativePG's).
pub const PHASE_WAITING_FOR_USER: &str = "Waiting for user action";
/// A switchover moved the primary and the cluster is settling.
pub const PHASE_SWITCHOVER: &str = "Switchover in progress";
/// The spec names something that does not exist (a Secret, a key); the instances cannot start
/// until a person provides it. `phaseReason` says what.
pub const PHASE_CANNOT_CREATE: &str = "Unable to create required cluster objects";

/// Something a person should notice, as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// What happened, in words.
    pub note: String,
}

/// What the status is computed from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The cluster's names.
    pub names: &'a Names,
    /// `spec.instances`.
    pub instances: i32,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The image the instances run.
    pub image: String,
    /// The status as stored.
    pub previous: Option<&'a PostgresClusterStatus>,
    /// The instances' Pods.
    pub pods: &'a [Pod],
    /// The primary's Lease.
    pub lease: Option<&'a Lease>,
    /// What each instance's `/status` said, or why it could not be read.
    pub reports: &'a BTreeMap<String, Result<InstanceStatus, String>>,
    /// Spec problems that keep the instances from starting.
    pub problems: &'a [String],
    /// When the operator's server certificate expires.
    pub server_not_after: Option<String>,
    /// Volumes being grown.
    pub volumes: BTreeMap<String, crate::crd::VolumeResize>,
    /// A rolling update under way: whether it waits for a person, and what it is doing.
    pub rolling: Option<(bool, String)>,
    /// The requests made through annotations, and how they ended.
    pub requests: BTreeMap<String, crate::crd::RequestOutcome>,
    /// Now, RFC 3339.
    pub now: &'a str,
}

use super::pods::ready as pod_ready;

fn holder(lease: Option<&Lease>) -> Option<String> {
    lease?.spec.as_ref()?.holder_identity.clone().filter(|h| !h.is_empty())
}

fn report(r: &Result<InstanceStatus, String>) -> InstanceReport {
    match r {
        Err(e) => InstanceReport { error: Some(e.clone()), ..InstanceReport::default() },
        Ok(s) => {
            let lsn = s.current_lsn.or(s.replayed_lsn).map(|l| l.to_string());
            InstanceReport {
                role: Some(s.role.to_string()),
                is_primary: s.role == InstanceRole::Primary,
                time_line_id: s.timeline.map(i64::from),
                lsn,
                lag_bytes: None,
                error: None,
            }
        }
    }
}

/// The status and what to tell a person about the change from the previous one.
pub fn compute(i: &Inputs<'_>) -> (PostgresClusterStatus, Vec<Notice>) {
    let mut notices = Vec::new();
    let prev = i.previous.cloned().unwrap_or_default();
    let mut pods: Vec<&Pod> = i.pods.iter().filter(|p| i.names.instance_number(&p.name_any()).is_some()).collect();
    pods.sort_by_key(|p| i.names.instance_number(&p.name_any()));
    let ready: Vec<String> = pods.iter().filter(|p| pod_ready(p)).map(|p| p.name_any()).collect();
    let not_ready: Vec<String> = pods.iter().filter(|p| !pod_ready(p)).map(|p| p.name_any()).collect();
    let holder = holder(i.lease);
    let term = i.lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.lease_transitions);

    // Per-instance reports, with each replica's lag from the primary's replication view.
    let mut reported: BTreeMap<String, InstanceReport> =
        i.reports.iter().map(|(n, r)| (n.clone(), report(r))).collect();
    if let Some(Ok(primary)) = holder.as_ref().and_then(|h| i.reports.get(h)) {
        for peer in &primary.replication {
            if let Some(r) = reported.get_mut(&peer.name) {
                r.lag_bytes = peer.lag_bytes;
            }
        }
    }

    // A change of primary.
    let kind = holder.as_ref().and_then(|h| match i.reports.get(h) {
        Some(Ok(s)) => s.lease.as_ref().and_then(|l| l.last_transition.as_ref()).map(|t| t.kind),
        _ => None,
    });
    let changed = holder.is_some() && holder != prev.current_primary;
    match (&prev.current_primary, &holder) {
        (Some(old), Some(new)) if old != new => {
            let switchover = kind == Some(TransitionKind::Switchover);
            notices.push(Notice {
                warning: !switchover,
                reason: if switchover { "SwitchoverDetected" } else { "FailoverDetected" },
                note: format!(
                    "the primary changed from {old} to {new} (term {}); the instances elected it themselves",
                    term.unwrap_or_default()
                ),
            });
        }
        (None, Some(new)) => notices.push(Notice {
            warning: false,
            reason: "PrimaryElected",
            note: format!("{new} holds the primary lease (term {})", term.unwrap_or_default()),
        }),
        _ => {}
    }
    let was_healthy = prev.instances_status.get("healthy").cloned().unwrap_or_default();
    for name in &not_ready {
        if was_healthy.contains(name) {
            notices.push(Notice {
                warning: true,
                reason: "InstanceNotReady",
                note: format!("{name} is no longer ready"),
            });
        }
    }

    let holder_ready = holder.as_ref().is_some_and(|h| ready.contains(h));
    let (phase, reason) = if !i.problems.is_empty() {
        (PHASE_CANNOT_CREATE, i.problems.join("; "))
    } else if holder.is_none() && prev.current_primary.is_none() {
        (PHASE_SETTING_UP, "no instance holds the primary lease yet".to_owned())
    } else if holder.is_none() {
        (PHASE_FAILING_OVER, "the primary lease is free; the instances are electing a new primary".to_owned())
    } else if !holder_ready
        && prev.current_primary.is_some()
        && (changed || prev.phase.as_deref() != Some(PHASE_SETTING_UP))
    {
        if kind == Some(TransitionKind::Switchover) {
            (PHASE_SWITCHOVER, format!("{} is taking over", holder.clone().unwrap_or_default()))
        } else {
            (PHASE_FAILING_OVER, format!("{} holds the lease and is not ready yet", holder.clone().unwrap_or_default()))
        }
    } else if !holder_ready {
        (PHASE_SETTING_UP, format!("{} holds the lease and is starting", holder.clone().unwrap_or_default()))
    } else if (pods.len() as i32) < i.instances {
        (PHASE_CREATING_REPLICA, format!("{} of {} instances exist", pods.len(), i.instances))
    } else if let Some((person, what)) = &i.rolling {
        (if *person { PHASE_WAITING_FOR_USER } else { PHASE_UPGRADING }, what.clone())
    } else if (ready.len() as i32) < i.instances {
        (PHASE_WAITING, format!("not ready: {}", not_ready.join(", ")))
    } else {
        (PHASE_HEALTHY, String::new())
    };
    let healthy = phase == PHASE_HEALTHY;

    let condition = |previous: Option<&Condition>| {
        let status = if healthy { "True" } else { "False" };
        let code = if healthy { "ClusterIsReady" } else { "ClusterIsNotReady" };
        let message = if healthy {
            "every instance is ready and a primary is elected".to_owned()
        } else if reason.is_empty() {
            phase.to_owned()
        } else {
            format!("{phase}: {reason}")
        };
        let since = match previous {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(i.now.parse().unwrap_or_default()),
        };
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: code.into(),
            message,
            last_transition_time: since,
            observed_generation: i.generation,
        }
    };
    let previous_ready = prev.conditions.iter().find(|c| c.type_ == "Ready");

    let mut topology = Topology::default();
    for p in &pods {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            topology.instances.insert(p.name_any(), node);
        }
    }
    let nodes: std::collections::BTreeSet<&String> = topology.instances.values().collect();
    topology.nodes_used = nodes.len() as i32;
    topology.success_fully_spread = !topology.instances.is_empty() && nodes.len() == topology.instances.len();

    let mut instances_status = BTreeMap::new();
    if !ready.is_empty() {
        instances_status.insert("healthy".to_owned(), ready.clone());
    }
    if !not_ready.is_empty() {
        instances_status.insert("failed".to_owned(), not_ready.clone());
    }

    let last_backup = i
        .reports
        .values()
        .filter_map(|r| r.as_ref().ok())
        .filter_map(|s| s.backup.as_ref()?.last_backup.clone())
        .max_by_key(|b| b.stopped_at);

    let ready_condition = condition(previous_ready);
    // Whether WAL reaches the store, from the primary's own account; said once when it changes.
    let previous_archiving = prev.conditions.iter().find(|c| c.type_ == super::archiving::TYPE);
    let primary_report = holder.as_ref().and_then(|h| i.reports.get(h)).and_then(|r| r.as_ref().ok());
    let archiving = super::archiving::condition(primary_report, previous_archiving, i.now, i.generation);
    let archiving_changed = |c: &Condition| match previous_archiving {
        Some(p) => p.status != c.status || p.reason != c.reason,
        None => c.status == "False",
    };
    if let Some(c) = archiving.as_ref().filter(|c| archiving_changed(c)) {
        let reason = super::archiving::reason_of(c);
        notices.push(Notice { warning: c.status == "False", reason, note: c.message.clone() });
    }
    let status = PostgresClusterStatus {
        phase: Some(phase.to_owned()),
        phase_reason: (!reason.is_empty()).then_some(reason),
        conditions: std::iter::once(ready_condition).chain(archiving).collect(),
        instances: pods.len() as i32,
        ready_instances: ready.len() as i32,
        current_primary: holder.clone(),
        current_primary_timestamp: if changed {
            Some(i.now.to_owned())
        } else {
            prev.current_primary_timestamp.clone()
        },
        primary_term: term,
        image: Some(i.image.clone()),
        write_service: Some(i.names.rw()),
        read_service: Some(i.names.ro()),
        instances_status,
        topology,
        instances_reported_state: reported,
        last_successful_backup: last_backup.as_ref().map(|b| b.stopped_at.to_string()).or(prev.last_successful_backup),
        last_successful_backup_id: last_backup.map(|b| b.id).or(prev.last_successful_backup_id),
        next_scheduled_backup: match holder.as_ref().and_then(|h| i.reports.get(h)) {
            Some(Ok(s)) => s.backup.as_ref().and_then(|b| b.next_scheduled_at).map(|t| t.to_string()),
            _ => prev.next_scheduled_backup,
        },
        server_certificate_expiration: i.server_not_after.clone(),
        volume_resizes: i.volumes.clone(),
        requests: i.requests.clone(),
        observed_generation: i.generation,
    };
    (status, notices)
}
