//! PodDisruptionBudgets: a voluntary eviction (a node drain) never takes the primary (the
//! budget refuses it; moving it is a switchover, which the instance manager does on SIGTERM when
//! a person deletes the pod) and never takes the replicas below what keeps primary plus replicas
//! a majority of the cluster. A single instance gets none: a budget it could never satisfy would
//! block every node drain.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;

fn budget(cluster: &Cluster<'_>, name: String, role: &str, min_available: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: cluster.meta(&name),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(cluster.names.role_selector(role)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The replicas that must stay so that primary plus replicas are a majority of `instances`.
pub fn replica_quorum(instances: i32) -> i32 {
    instances / 2
}

/// The budgets of `cluster`.
pub fn budgets(cluster: &Cluster<'_>) -> Vec<PodDisruptionBudget> {
    let n = cluster.spec().instances;
    if n <= 1 {
        return Vec::new();
    }
    let mut out = vec![budget(cluster, cluster.names.primary_pdb(), "primary", 1)];
    let quorum = replica_quorum(n);
    if quorum > 0 {
        out.push(budget(cluster, cluster.names.replicas_pdb(), "replica", quorum));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::replica_quorum;

    #[test]
    fn the_primary_and_the_quorum_are_a_majority() {
        for (n, q) in [(2, 1), (3, 1), (4, 2), (5, 2)] {
            assert_eq!(replica_quorum(n), q, "instances {n}");
            assert!(1 + replica_quorum(n) > n / 2, "instances {n}: primary + quorum is a majority");
        }
    }
}
