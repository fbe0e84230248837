//! Pods that will never run again: a Pod whose phase is `Failed` (evicted for memory or disk
//! pressure, its node shut down gracefully) keeps its name, so the operator could never create
//! the instance again on its PVC. Such a Pod is deleted (with a UID precondition: only the very
//! Pod that was seen failed) and created again by the next pass. A Pod that is merely not ready,
//! or on a node that stopped answering, is left alone: its instance may still be running, and
//! only the instances decide who is primary.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::names::Names;

/// Whether `pod` passes its readiness probe and is not being deleted.
pub fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Pod named `name`, ready or not, for tests.
#[cfg(test)]
pub(crate) fn test_pod(name: &str, ready: bool) -> Pod {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    Pod {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..kube::api::ObjectMeta::default() },
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

/// A Pod to delete so that its instance can be re-created: name, uid and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    /// The Pod's name.
    pub name: String,
    /// Its uid (the delete's precondition).
    pub uid: String,
    /// Its phase and reason, for the Event.
    pub why: String,
}

/// The cluster's Pods that ended for good and are not being deleted already.
pub fn dead(names: &Names, pods: &[Pod]) -> Vec<Dead> {
    pods.iter()
        .filter(|p| names.instance_number(&p.name_any()).is_some() && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let phase = status.phase.as_deref()?;
            (phase == "Failed" || phase == "Succeeded").then(|| Dead {
                name: p.name_any(),
                uid: p.uid().unwrap_or_default(),
                why: match (&status.reason, &status.message) {
                    (Some(r), Some(m)) => format!("{phase}: {r}: {m}"),
                    (Some(r), None) => format!("{phase}: {r}"),
                    _ => phase.to_owned(),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodStatus;
    use kube::api::ObjectMeta;

    use super::*;

    fn pod(name: &str, phase: &str, reason: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta { name: Some(name.into()), uid: Some(format!("uid-{name}")), ..ObjectMeta::default() },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                reason: reason.map(Into::into),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_pods_that_ended_for_good_are_deleted() {
        let names = Names::new("pg", "db");
        let pods = vec![
            pod("pg-1", "Running", None),
            pod("pg-2", "Failed", Some("Evicted")),
            pod("pg-3", "Pending", None),
            pod("other-1", "Failed", None),
        ];
        let d = dead(&names, &pods);
        assert_eq!(d, vec![Dead { name: "pg-2".into(), uid: "uid-pg-2".into(), why: "Failed: Evicted".into() }]);
    }
}
