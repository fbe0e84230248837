//! Node drains: the primary leaves a cordoned node by a switchover, before its eviction.
//!
//! `kubectl drain` first cordons the node (`spec.unschedulable`), then evicts its pods. The
//! primary's PodDisruptionBudget refuses the primary's eviction (the drain retries), so the
//! operator — woken by the Node's change ([`Cordoned`], fed by a watch on Nodes) — switches over
//! to the most caught-up ready replica on a node that is not cordoned, through the primary's
//! API. The old primary is then a replica, which the replicas' budget lets go when a quorum
//! stays; its pod is re-created elsewhere on its PVC where the volume allows. Without such a
//! replica the operator waits and says why in the status: the drain waits too.
//! Decided without I/O ([`next`]); carried out by [`run`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use pgwarden_contract::InstanceStatus;

use super::pods::ready;
use crate::names::Names;

/// The names of the nodes that are cordoned now, kept by the watch on Nodes.
#[derive(Debug, Clone, Default)]
pub struct Cordoned(Arc<RwLock<BTreeSet<String>>>);

impl Cordoned {
    /// Takes note of `node`'s state; whether it is cordoned.
    pub fn observe(&self, node: &Node) -> bool {
        let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        let mut set = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cordoned {
            set.insert(node.name_any());
        } else {
            set.remove(&node.name_any());
        }
        cordoned
    }

    /// The cordoned nodes now.
    pub fn nodes(&self) -> BTreeSet<String> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// What a drain asks of the operator now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The primary is not on a cordoned node.
    Nothing,
    /// It is, and no replica can take over yet.
    Wait(String),
    /// Hand over to `target`.
    Switchover {
        /// The primary.
        from: String,
        /// The most caught-up ready replica on a node that is not cordoned.
        target: String,
        /// The primary's node.
        node: String,
    },
}

/// The next step for the primary `holder`, given the cordoned nodes.
pub fn next(
    names: &Names,
    pods: &[Pod],
    holder: Option<&str>,
    reports: &BTreeMap<String, Result<InstanceStatus, String>>,
    cordoned: &BTreeSet<String>,
) -> Step {
    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    let Some(primary) = holder.and_then(|h| pods.iter().find(|p| p.name_any() == h)) else { return Step::Nothing };
    let Some(node) = node_of(primary).filter(|n| cordoned.contains(n)) else { return Step::Nothing };
    let from = primary.name_any();
    let candidates: Vec<String> = pods
        .iter()
        .filter(|p| p.name_any() != from && ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter(|p| node_of(p).is_some_and(|n| !cordoned.contains(&n)))
        .map(ResourceExt::name_any)
        .collect();
    match super::rollout::most_caught_up(names, &from, candidates, reports) {
        Some(target) => Step::Switchover { from, target, node },
        None => Step::Wait(format!(
            "{from} (the primary) is on the cordoned node {node}; no ready replica on another node can take over"
        )),
    }
}

/// Carries out [`next`]: a description for the status while the primary is on a cordoned node.
pub(super) async fn run(
    ctx: &super::Context,
    resource: &crate::crd::PostgresCluster,
    step: Step,
    targets: &BTreeMap<String, crate::instances::Target>,
) -> Option<String> {
    match step {
        Step::Nothing => None,
        Step::Wait(why) => Some(format!("node drain: {why}")),
        Step::Switchover { from, target, node } => {
            let Some(t) = targets.get(&from) else {
                return Some(format!("node drain: waiting to reach {from} to switch over"));
            };
            let note = match ctx.instance_api.post(t, "/switchover", serde_json::json!({"target": target})).await {
                Ok(_) => format!("{node} is cordoned: {from} handed over to {target}"),
                Err(e) => format!("{node} is cordoned: {from} did not hand over to {target}: {e}"),
            };
            super::publish(ctx, resource, false, "NodeDrain", note.clone()).await;
            Some(format!("node drain: {note}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::pods::test_pod;

    fn on(mut p: Pod, node: &str) -> Pod {
        p.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        p
    }

    fn pods() -> Vec<Pod> {
        vec![on(test_pod("pg-1", true), "a"), on(test_pod("pg-2", true), "b"), on(test_pod("pg-3", true), "c")]
    }

    fn step(pods: &[Pod], cordoned: &[&str]) -> Step {
        let cordoned: BTreeSet<String> = cordoned.iter().map(|s| (*s).to_owned()).collect();
        next(&Names::new("pg", "db"), pods, Some("pg-1"), &BTreeMap::new(), &cordoned)
    }

    #[test]
    fn a_primary_on_a_cordoned_node_hands_over_to_a_replica_elsewhere() {
        assert_eq!(step(&pods(), &[]), Step::Nothing);
        assert_eq!(step(&pods(), &["b"]), Step::Nothing, "a replica's node: the budgets decide");
        assert_eq!(
            step(&pods(), &["a", "b"]),
            Step::Switchover { from: "pg-1".into(), target: "pg-3".into(), node: "a".into() },
            "never to a replica on a cordoned node"
        );
    }

    #[test]
    fn without_a_ready_replica_elsewhere_the_drain_waits() {
        let mut p = pods();
        p[1] = on(test_pod("pg-2", false), "b");
        let Step::Wait(why) = step(&p, &["a", "c"]) else { panic!("waits") };
        assert!(why.contains("pg-1 (the primary) is on the cordoned node a"), "{why}");
    }

    #[test]
    fn the_watch_keeps_the_cordoned_nodes() {
        let c = Cordoned::default();
        let mut node = Node::default();
        node.metadata.name = Some("a".into());
        assert!(!c.observe(&node));
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec { unschedulable: Some(true), ..Default::default() });
        assert!(c.observe(&node));
        assert_eq!(c.nodes(), BTreeSet::from(["a".to_owned()]));
        node.spec = None;
        c.observe(&node);
        assert!(c.nodes().is_empty(), "uncordoned");
    }
}
