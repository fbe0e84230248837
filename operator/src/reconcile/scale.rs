//! Scaling down: what goes when `instances` is lowered, decided without I/O.
//!
//! The instances numbered above `instances` go, highest first, and never the primary: when the
//! Lease holder is one of them, it first hands over (a switchover through its API) to a ready
//! instance that stays, and nothing is deleted in that pass. The members were already removed
//! from the instances' configuration by the apply step, so the instances that stay apply the
//! new membership (the synchronous set shrinks first) while the leaving pods stop. Their PVCs
//! follow `pvcRetentionPolicy.whenScaled` once their pods are gone. Scaling up needs nothing
//! here: the builders make the new PVCs and pods, and the configuration lists the new members.
//!
//! A leaving replica that the primary still publishes as a synchronous standby (its `/status`
//! says so) stays until the primary has applied the new membership — a ConfigMap reaches the
//! pods within about a minute — so that no acknowledged commit rests on a deleted standby.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use crate::crd::RetentionAction;
use crate::names::{INSTANCE_LABEL, Names};

/// One step of a scale-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The primary is leaving: hand over to `target` first.
    Switchover {
        /// The leaving primary.
        from: String,
        /// A ready instance that stays.
        target: String,
    },
    /// The primary is leaving and no instance that stays is ready to take over: wait.
    WaitForTarget {
        /// The leaving primary.
        from: String,
    },
    /// A leaving replica is still a published synchronous standby of the primary: wait until
    /// the primary has applied the new membership (it unpublishes the standby first).
    WaitForSyncSet(String),
    /// Delete a leaving replica's pod.
    DeletePod(String),
    /// Delete a PVC whose instance is gone.
    DeletePvc(String),
}

use super::pods::ready;

/// What to do for `names` at `instances`, given its pods, PVCs, Lease holder, the holder's
/// published synchronous standbys (from its `/status`) and retention.
pub fn plan(
    names: &Names,
    instances: i32,
    pods: &[Pod],
    pvcs: &[PersistentVolumeClaim],
    holder: Option<&str>,
    sync_standbys: &[String],
    when_scaled: RetentionAction,
) -> Vec<Step> {
    let number = |name: &str| names.instance_number(name);
    let mut leaving: Vec<&Pod> = pods.iter().filter(|p| number(&p.name_any()).is_some_and(|n| n > instances)).collect();
    leaving.sort_by_key(|p| std::cmp::Reverse(number(&p.name_any())));
    if let Some(primary) = holder.filter(|h| leaving.iter().any(|p| p.name_any() == *h)) {
        let mut staying: Vec<&Pod> =
            pods.iter().filter(|p| number(&p.name_any()).is_some_and(|n| n <= instances) && ready(p)).collect();
        staying.sort_by_key(|p| number(&p.name_any()));
        return vec![match staying.first() {
            Some(t) => Step::Switchover { from: primary.to_owned(), target: t.name_any() },
            None => Step::WaitForTarget { from: primary.to_owned() },
        }];
    }
    let mut steps: Vec<Step> = leaving
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let name = p.name_any();
            if sync_standbys.contains(&name) { Step::WaitForSyncSet(name) } else { Step::DeletePod(name) }
        })
        .collect();
    if when_scaled == RetentionAction::Delete {
        let alive: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
        let mut gone: Vec<String> = pvcs
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| {
                let instance = c.labels().get(INSTANCE_LABEL)?.clone();
                (number(&instance).is_some_and(|n| n > instances) && !alive.contains(&instance)).then(|| c.name_any())
            })
            .collect();
        gone.sort();
        steps.extend(gone.into_iter().map(Step::DeletePvc));
    }
    steps
}

/// The PVCs whose owner reference disagrees with `pvcRetentionPolicy.whenDeleted` (it changed
/// after they were made): `(name, owned)` to set.
pub fn ownership_fixes(
    pvcs: &[PersistentVolumeClaim],
    cluster_uid: &str,
    when_deleted: RetentionAction,
) -> Vec<(String, bool)> {
    let want = when_deleted == RetentionAction::Delete;
    pvcs.iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| {
            let owned = c.owner_references().iter().any(|o| o.uid == cluster_uid);
            (owned != want).then(|| (c.name_any(), want))
        })
        .collect()
}

/// Carries out [`plan`] and [`ownership_fixes`] for one pass.
pub(super) async fn run(
    ctx: &super::Context,
    resource: &crate::crd::PostgresCluster,
    cluster: &crate::build::Cluster<'_>,
    observed: &super::observe::Observed,
    targets: &std::collections::BTreeMap<String, crate::instances::Target>,
    holder: Option<&str>,
    sync_standbys: &[String],
) -> Result<(), super::ReconcileError> {
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    let names = &cluster.names;
    let policy = &cluster.spec().pvc_retention_policy;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let steps = plan(
        names,
        cluster.spec().instances,
        &observed.pods,
        &observed.pvcs,
        holder,
        sync_standbys,
        policy.when_scaled,
    );
    for step in steps {
        match step {
            Step::Switchover { from, target } => {
                let Some(t) = targets.get(&from) else { continue };
                let note = match ctx.instance_api.post(t, "/switchover", serde_json::json!({"target": target})).await {
                    Ok(_) => format!("{from} is leaving (instances lowered): handed over to {target}"),
                    Err(e) => format!("{from} is leaving (instances lowered) but did not hand over to {target}: {e}"),
                };
                tracing::info!(cluster = %names.cluster, %note, "scale down");
                super::publish(ctx, resource, false, "ScaleDownSwitchover", note).await;
            }
            Step::WaitForSyncSet(name) => {
                tracing::info!(cluster = %names.cluster, instance = %name, "scale down waits: still a published synchronous standby of the primary");
            }
            Step::WaitForTarget { from } => {
                tracing::warn!(cluster = %names.cluster, primary = %from, "scale down waits: no ready instance that stays can take over from the primary");
            }
            Step::DeletePod(name) => {
                match pods.delete(&name, &DeleteParams::default()).await {
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                    Ok(_) => {}
                }
                super::publish(ctx, resource, false, "ScaledDown", format!("{name} removed (instances lowered)")).await;
            }
            Step::DeletePvc(name) => {
                match claims.delete(&name, &DeleteParams::default()).await {
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                    Ok(_) => {}
                }
                super::publish(
                    ctx,
                    resource,
                    false,
                    "PvcDeleted",
                    format!("PVC {name} deleted (pvcRetentionPolicy.whenScaled: Delete)"),
                )
                .await;
            }
        }
    }
    let uid = resource.metadata.uid.clone().unwrap_or_default();
    let owner = kube::Resource::controller_owner_ref(resource, &());
    for (name, owned) in ownership_fixes(&observed.pvcs, &uid, policy.when_deleted) {
        let refs = if owned { serde_json::json!([owner]) } else { serde_json::Value::Null };
        let patch = serde_json::json!({"metadata": {"ownerReferences": refs}});
        let params = PatchParams { field_manager: Some(crate::names::FIELD_MANAGER.into()), ..PatchParams::default() };
        claims.patch(&name, &params, &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    use crate::reconcile::pods::test_pod as pod;

    fn pvc(name: &str, instance: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([(INSTANCE_LABEL.to_owned(), instance.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..PersistentVolumeClaim::default()
        }
    }

    #[test]
    fn replicas_above_the_count_go_highest_first_and_never_the_primary() {
        let names = Names::new("pg", "db");
        let pods = vec![pod("pg-1", true), pod("pg-2", true), pod("pg-3", true), pod("pg-4", true), pod("pg-5", true)];
        let steps = plan(&names, 3, &pods, &[], Some("pg-1"), &[], RetentionAction::Delete);
        assert_eq!(steps, vec![Step::DeletePod("pg-5".into()), Step::DeletePod("pg-4".into())]);
        // A published synchronous standby waits until the primary has let it go.
        let steps = plan(&names, 3, &pods, &[], Some("pg-1"), &["pg-4".into()], RetentionAction::Delete);
        assert_eq!(steps, vec![Step::DeletePod("pg-5".into()), Step::WaitForSyncSet("pg-4".into())]);
        // The primary is leaving: a switchover first, nothing deleted yet.
        let steps = plan(&names, 3, &pods, &[], Some("pg-5"), &[], RetentionAction::Delete);
        assert_eq!(steps, vec![Step::Switchover { from: "pg-5".into(), target: "pg-1".into() }]);
        // ...to a ready instance only.
        let pods = vec![pod("pg-1", false), pod("pg-2", true), pod("pg-3", true)];
        let steps = plan(&names, 1, &pods, &[], Some("pg-3"), &[], RetentionAction::Delete);
        assert_eq!(steps, vec![Step::WaitForTarget { from: "pg-3".into() }]);
    }

    #[test]
    fn pvcs_go_once_their_pod_is_gone_and_only_with_delete() {
        let names = Names::new("pg", "db");
        let pods = vec![pod("pg-1", true), pod("pg-3", true)];
        let pvcs = vec![pvc("pg-1", "pg-1"), pvc("pg-2", "pg-2"), pvc("pg-2-wal", "pg-2"), pvc("pg-3", "pg-3")];
        let steps = plan(&names, 1, &pods, &pvcs, Some("pg-1"), &[], RetentionAction::Delete);
        assert_eq!(
            steps,
            vec![Step::DeletePod("pg-3".into()), Step::DeletePvc("pg-2".into()), Step::DeletePvc("pg-2-wal".into())]
        );
        let steps = plan(&names, 1, &pods, &pvcs, Some("pg-1"), &[], RetentionAction::Retain);
        assert_eq!(steps, vec![Step::DeletePod("pg-3".into())]);
        // Nothing to do at the right size.
        assert!(plan(&names, 3, &pods, &pvcs, Some("pg-1"), &[], RetentionAction::Delete).is_empty());
    }
}
