//! Rolling updates, decided without I/O: a Pod is outdated when the spec now builds it
//! differently (its applied hash differs: a new image, resources, scheduling) or when its
//! instance reports parameters that wait for a restart (`/status` `pending_restart`).
//!
//! One instance at a time, and only while every instance is ready (so a replica re-created
//! before has caught up enough to pass its readiness probe): the outdated replicas first,
//! highest-numbered first; then the primary, by a switchover to the most caught-up ready
//! replica through the primary's API (`unsupervised`), or by a person's switchover
//! (`supervised`); the old primary is then an outdated replica like any other. Deleting a Pod is
//! the update: the next pass creates it again from the new spec, on its PVC.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use pgwarden_contract::InstanceStatus;

use crate::crd::PrimaryUpdateStrategy;
use crate::names::Names;

/// The next step of a rolling update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing is outdated.
    Done,
    /// Something is outdated but an instance is not ready (or terminating): wait.
    Wait(String),
    /// Re-create this replica.
    Recreate(String),
    /// The primary is the last outdated instance: hand over to `target`.
    Switchover {
        /// The primary.
        from: String,
        /// The most caught-up ready replica.
        target: String,
    },
    /// `supervised`: the primary is outdated; a person switches over.
    WaitForPerson(String),
}

use super::pods::ready;

/// Everything a rollout decision looks at.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The cluster's names.
    pub names: &'a Names,
    /// `spec.instances`.
    pub instances: i32,
    /// The Pods.
    pub pods: &'a [Pod],
    /// Each Pod's applied hash, and the hash the spec builds now, by name.
    pub stored: &'a BTreeMap<String, Option<String>>,
    /// The hash of each desired Pod, by name.
    pub desired: &'a BTreeMap<String, String>,
    /// The Lease holder.
    pub holder: Option<&'a str>,
    /// The instances' `/status`, where read.
    pub reports: &'a BTreeMap<String, Result<InstanceStatus, String>>,
    /// `spec.primaryUpdateStrategy`.
    pub strategy: PrimaryUpdateStrategy,
}

/// The next step.
pub fn next(i: &Inputs<'_>) -> Step {
    let number = |n: &str| i.names.instance_number(n);
    let mut ours: Vec<&Pod> =
        i.pods.iter().filter(|p| number(&p.name_any()).is_some_and(|n| n <= i.instances)).collect();
    ours.sort_by_key(|p| std::cmp::Reverse(number(&p.name_any())));
    let outdated = |p: &Pod| {
        let name = p.name_any();
        let spec_changed = match (i.stored.get(&name), i.desired.get(&name)) {
            (Some(Some(have)), Some(want)) => have != want,
            _ => false,
        };
        let pending = matches!(i.reports.get(&name), Some(Ok(s)) if !s.pending_restart.is_empty());
        spec_changed || pending
    };
    let stale: Vec<&&Pod> = ours.iter().filter(|p| outdated(p)).collect();
    if stale.is_empty() {
        return Step::Done;
    }
    if let Some(p) = ours.iter().find(|p| !ready(p)) {
        return Step::Wait(format!("{} is not ready", p.name_any()));
    }
    if (ours.len() as i32) < i.instances {
        return Step::Wait("an instance is being created".into());
    }
    if let Some(replica) = stale.iter().find(|p| Some(p.name_any().as_str()) != i.holder) {
        return Step::Recreate(replica.name_any());
    }
    let primary = stale[0].name_any();
    if ours.len() < 2 {
        // A single instance has no replica to hand over to: re-creating it is the update.
        return Step::Recreate(primary);
    }
    if i.strategy == PrimaryUpdateStrategy::Supervised {
        return Step::WaitForPerson(primary);
    }
    let candidates: Vec<String> = ours.iter().map(|p| p.name_any()).filter(|n| *n != primary).collect();
    match most_caught_up(i.names, &primary, candidates, i.reports) {
        Some(target) => Step::Switchover { from: primary, target },
        None => Step::Wait("no replica to hand over to".into()),
    }
}

/// Of `candidates`, the most caught-up: the smallest lag `primary` reports, then the number.
pub fn most_caught_up(
    names: &Names,
    primary: &str,
    mut candidates: Vec<String>,
    reports: &BTreeMap<String, Result<InstanceStatus, String>>,
) -> Option<String> {
    let lag: BTreeMap<String, i64> = match reports.get(primary) {
        Some(Ok(s)) => s.replication.iter().map(|r| (r.name.clone(), r.lag_bytes.unwrap_or(i64::MAX))).collect(),
        _ => BTreeMap::new(),
    };
    candidates.sort_by_key(|n| (lag.get(n).copied().unwrap_or(i64::MAX), names.instance_number(n)));
    candidates.into_iter().next()
}

/// Carries out [`next`]; a description of the rollout for the status, while one is under way.
pub(super) async fn run(
    ctx: &super::Context,
    resource: &crate::crd::PostgresCluster,
    inputs: &Inputs<'_>,
    targets: &BTreeMap<String, crate::instances::Target>,
) -> Result<Option<(bool, String)>, super::ReconcileError> {
    use kube::api::{Api, DeleteParams};
    let ns = &inputs.names.namespace;
    Ok(match next(inputs) {
        Step::Done => None,
        Step::Wait(why) => Some((false, format!("rolling update: waiting, {why}"))),
        Step::Recreate(name) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            match pods.delete(&name, &DeleteParams::default()).await {
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let note = format!("{name} re-created with the new spec");
            super::publish(ctx, resource, false, "RollingUpdate", note.clone()).await;
            Some((false, format!("rolling update: {note}")))
        }
        Step::Switchover { from, target } => {
            let Some(t) = targets.get(&from) else {
                return Ok(Some((false, format!("rolling update: waiting to reach {from} to switch over"))));
            };
            let note = match ctx.instance_api.post(t, "/switchover", serde_json::json!({"target": target})).await {
                Ok(_) => format!("{from} handed over to {target}; {from} is updated next"),
                Err(e) => format!("{from} did not hand over to {target}: {e}"),
            };
            super::publish(ctx, resource, false, "RollingUpdate", note.clone()).await;
            Some((false, format!("rolling update: {note}")))
        }
        Step::WaitForPerson(primary) => Some((
            true,
            format!(
                "rolling update: every replica is updated; {primary} (the primary) waits for a switchover: kubectl annotate pgc {} pgwarden.io/switchover=auto",
                inputs.names.cluster
            ),
        )),
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::reconcile::pods::test_pod as pod;

    fn hashes(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned()))).collect()
    }

    fn run(pods: &[Pod], stored: &[(&str, &str)], holder: &str, strategy: PrimaryUpdateStrategy) -> Step {
        let names = Names::new("pg", "db");
        let desired: BTreeMap<String, String> =
            ["pg-1", "pg-2", "pg-3"].iter().map(|n| ((*n).to_owned(), "new".to_owned())).collect();
        let stored = hashes(stored);
        let reports = BTreeMap::new();
        next(&Inputs {
            names: &names,
            instances: 3,
            pods,
            stored: &stored,
            desired: &desired,
            holder: Some(holder),
            reports: &reports,
            strategy,
        })
    }

    #[test]
    fn replicas_first_one_at_a_time_then_the_primary_by_switchover() {
        let all = [pod("pg-1", true), pod("pg-2", true), pod("pg-3", true)];
        let old = [("pg-1", "old"), ("pg-2", "old"), ("pg-3", "old")];
        assert_eq!(run(&all, &old, "pg-1", PrimaryUpdateStrategy::Unsupervised), Step::Recreate("pg-3".into()));
        // pg-3 was re-created and is not ready yet: wait.
        let waiting = [pod("pg-1", true), pod("pg-2", true), pod("pg-3", false)];
        let after3 = [("pg-1", "old"), ("pg-2", "old"), ("pg-3", "new")];
        assert!(matches!(run(&waiting, &after3, "pg-1", PrimaryUpdateStrategy::Unsupervised), Step::Wait(_)));
        assert_eq!(run(&all, &after3, "pg-1", PrimaryUpdateStrategy::Unsupervised), Step::Recreate("pg-2".into()));
        let only_primary = [("pg-1", "old"), ("pg-2", "new"), ("pg-3", "new")];
        assert_eq!(
            run(&all, &only_primary, "pg-1", PrimaryUpdateStrategy::Unsupervised),
            Step::Switchover { from: "pg-1".into(), target: "pg-2".into() }
        );
        assert_eq!(
            run(&all, &only_primary, "pg-1", PrimaryUpdateStrategy::Supervised),
            Step::WaitForPerson("pg-1".into())
        );
        // After the switchover the old primary is a replica like any other.
        assert_eq!(
            run(&all, &only_primary, "pg-2", PrimaryUpdateStrategy::Unsupervised),
            Step::Recreate("pg-1".into())
        );
        let current = [("pg-1", "new"), ("pg-2", "new"), ("pg-3", "new")];
        assert_eq!(run(&all, &current, "pg-2", PrimaryUpdateStrategy::Unsupervised), Step::Done);
    }
}
