//! Reconcile: one `PostgresCluster` made real (docs/operator.md).
//!
//! 1. **Observe** ([`observe`]): one list per owned kind by the cluster's label, the Lease, the
//!    Secrets the spec names. Reads only.
//! 2. **Secrets** ([`secrets`]): create the missing ones, renew the operator's certificate,
//!    check the provided ones. Nothing is ever regenerated.
//! 3. **Apply** ([`plan`]): build every desired object ([`crate::build`], pure), stamp it with
//!    its content hash, and server-side apply (field manager [`FIELD_MANAGER`]) only those whose
//!    stored hash differs; Pods and PVCs are created when missing and otherwise left to the
//!    rolling operations. A second reconcile of an unchanged cluster therefore sends no write.
//!    Pods that ended for good are deleted first ([`pods`]), so a later pass creates them again.
//! 4. **Grow** ([`resize`]): PVCs below the spec's size are patched to it.
//! 5. **Scale down** ([`scale`]): the instances above `instances` go, never the primary (it
//!    hands over first); their PVCs per `pvcRetentionPolicy`.
//!    **Roll** ([`rollout`]): outdated pods are re-created one at a time, replicas first, the
//!    primary after a switchover. **Drain** ([`drain`]): a primary on a cordoned node hands
//!    over first.
//! 6. **Requests** ([`requests`], [`act`]): switchover, fence, unfence and restart asked for
//!    with annotations, carried out and acknowledged.
//! 7. **Status** ([`status`]): from the Pods, the Lease and each instance's `/status`
//!    ([`crate::instances`]); written as a merge patch only when it changed; Events for what a
//!    person should notice.
//!
//! What the operator never writes: the Lease, the `-rw` EndpointSlice, the `pgwarden.io/role`
//! labels (the instances own them; see docs/architecture.md §10). It reads the Lease, and the
//! builders never set the role label, so an apply cannot take it over either.

pub mod act;
pub mod archiving;
pub mod drain;
pub mod observe;
pub mod plan;
pub mod pods;
pub mod requests;
pub mod resize;
pub mod rollout;
pub mod scale;
pub mod secrets;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::Value;

use crate::build::{self, Cluster};
use crate::crd::{PostgresCluster, VolumeResize};
use crate::names::FIELD_MANAGER;
use plan::{Planned, Policy};

/// How soon a healthy cluster is looked at again (its status follows the instances).
pub const HEALTHY_REQUEUE: Duration = Duration::from_secs(30);
/// How soon a cluster that is not healthy is looked at again.
pub const UNHEALTHY_REQUEUE: Duration = Duration::from_secs(5);

/// What the reconcile reports to the runtime, so that metrics and health follow it.
pub trait Observer: Send + Sync {
    /// `namespace/name` is now in `phase` (a CloudNativePG phase string).
    fn phase(&self, namespace: &str, name: &str, phase: &str);
    /// `namespace/name` is gone.
    fn forget(&self, namespace: &str, name: &str);
}

/// An observer that remembers nothing (tests, `operator render`).
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn phase(&self, _: &str, _: &str, _: &str) {}
    fn forget(&self, _: &str, _: &str) {}
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Metrics and health.
    pub observer: Arc<dyn Observer>,
    /// Events on the clusters.
    pub recorder: Recorder,
    /// Whether instances' `/status` are read (off in tests without instances).
    pub read_instances: bool,
    /// The instances' control routes (scripted in tests).
    pub instance_api: Arc<dyn act::InstanceApi>,
    /// The cordoned nodes, kept by the runtime's watch on Nodes.
    pub cordoned: drain::Cordoned,
}

impl Context {
    /// A context on `client`, reporting to `observer`.
    pub fn new(client: kube::Client, observer: Arc<dyn Observer>) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            observer,
            read_instances: true,
            instance_api: Arc::new(act::Https),
            cordoned: drain::Cordoned::default(),
        }
    }
}

/// Why a reconcile failed; [`ReconcileError::kind`] is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The API server refused or failed a call.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// The cluster's objects could not be built.
    #[error(transparent)]
    Build(#[from] crate::build::BuildError),
    /// Credentials or certificates could not be generated.
    #[error(transparent)]
    Generate(#[from] crate::generate::GenerateError),
    /// An object could not be serialised.
    #[error("serialise {what}: {source}")]
    Serialize {
        /// Which object.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
}

impl ReconcileError {
    /// A short, stable label for metrics: `kube`, `build`, `generate`, `serialize`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Build(_) => "build",
            Self::Generate(_) => "generate",
            Self::Serialize { .. } => "serialize",
        }
    }
}

fn planned<K>(o: &K, policy: Policy) -> Result<Planned, ReconcileError>
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    plan::plan(o, policy)
        .map_err(|source| ReconcileError::Serialize { what: o.meta().name.clone().unwrap_or_default(), source })
}

/// Every desired object but the Secrets, in the order they are applied: what the Pods need
/// first.
fn all_planned(d: &build::Desired) -> Result<Vec<Planned>, ReconcileError> {
    let mut out = vec![
        planned(&d.service_account, Policy::Apply)?,
        planned(&d.role, Policy::Apply)?,
        planned(&d.role_binding, Policy::Apply)?,
        planned(&d.config_map, Policy::Apply)?,
    ];
    for s in &d.services {
        out.push(planned(s, Policy::Apply)?);
    }
    for p in &d.pdbs {
        out.push(planned(p, Policy::Apply)?);
    }
    for p in &d.pvcs {
        out.push(planned(p, Policy::CreateOnly)?);
    }
    for p in &d.pods {
        out.push(planned(p, Policy::CreateOnly)?);
    }
    Ok(out)
}

async fn apply(client: &kube::Client, ns: &str, p: &Planned) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &p.resource);
    api.patch(&p.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&p.body)).await?;
    Ok(())
}

/// An RFC 7386 merge patch turning `old` into `new`: removed keys become `null`.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

async fn publish(ctx: &Context, cluster: &PostgresCluster, warning: bool, reason: &str, note: String) {
    let event = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
        tracing::warn!(cluster = %cluster.name_any(), reason, error = %e, "could not record an event");
    }
}

/// The Secrets a cluster's spec names (read, never written).
fn named_secrets(cluster: &Cluster<'_>) -> Vec<String> {
    secrets::provided(cluster)
        .into_iter()
        .map(|(n, _)| n)
        .chain(build::config::backup_secret_keys(cluster.spec()).into_iter().map(|s| s.name))
        .collect()
}

/// Step 2: the Secrets the Pods mount, first.
async fn write_secrets(
    ctx: &Context,
    resource: &PostgresCluster,
    cluster: &Cluster<'_>,
    observed: &observe::Observed,
    now: jiff::Timestamp,
) -> Result<secrets::SecretsOutcome, ReconcileError> {
    let outcome = secrets::step(cluster, &observed.secrets, now)?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &cluster.names.namespace);
    for s in &outcome.writes {
        let name = s.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(s)).await?;
        tracing::info!(cluster = %cluster.names.cluster, secret = %name, "wrote a secret");
        publish(ctx, resource, false, "SecretWritten", format!("Secret {name}")).await;
    }
    Ok(outcome)
}

/// Step 3: Pods that ended for good are deleted, so that a later pass creates them again.
/// Returns what exists, with those Pods counted as still there (they may be terminating).
async fn delete_dead_pods(
    ctx: &Context,
    resource: &PostgresCluster,
    names: &crate::names::Names,
    observed: &observe::Observed,
) -> Result<plan::Stored, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut stored = observed.stored.clone();
    for d in pods::dead(names, &observed.pods) {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(d.uid.clone()), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&d.name, &params).await {
            Ok(_) => {
                tracing::warn!(cluster = %names.cluster, pod = %d.name, why = %d.why, "deleted a pod that ended; it is created again on its PVC");
                let note = format!("{} ended ({}); created again on its PVC", d.name, d.why);
                publish(ctx, resource, true, "PodRecreated", note).await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        stored.insert(("Pod".into(), d.name.clone()), None);
    }
    Ok(stored)
}

/// Step 4: apply what differs.
async fn apply_desired(
    ctx: &Context,
    resource: &PostgresCluster,
    names: &crate::names::Names,
    desired: &build::Desired,
    stored: &plan::Stored,
) -> Result<(), ReconcileError> {
    let planned = all_planned(desired)?;
    for (p, reason) in plan::writes(&planned, stored) {
        apply(&ctx.client, &names.namespace, p).await?;
        tracing::info!(cluster = %names.cluster, object = %p.describe(), ?reason, "applied");
        if reason == plan::Reason::Missing {
            publish(ctx, resource, false, "Created", format!("{} created", p.describe())).await;
        }
    }
    Ok(())
}

/// Step 5: grow the PVCs below the spec's size. Returns where every growing volume is. A PVC
/// the API server refused to grow is not asked again for the same size (the status says so).
async fn grow_volumes(
    ctx: &Context,
    resource: &PostgresCluster,
    names: &crate::names::Names,
    desired: &build::Desired,
    observed: &observe::Observed,
) -> Result<BTreeMap<String, VolumeResize>, ReconcileError> {
    let previous = resource.status.as_ref().map(|s| s.volume_resizes.clone()).unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut refused = BTreeMap::new();
    let mut asked = BTreeMap::new();
    for (name, size) in resize::to_grow(&desired.pvcs, &observed.pvcs) {
        if let Some(p) = previous.get(&name).filter(|p| p.state == "Refused" && p.requested == size) {
            refused.insert(name, p.message.clone().unwrap_or_default());
            continue;
        }
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
        match api
            .patch(
                &name,
                &PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() },
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(cluster = %names.cluster, pvc = %name, %size, "growing a volume");
                publish(ctx, resource, false, "VolumeResize", format!("PVC {name} asked to grow to {size}")).await;
                asked.insert(name, size);
            }
            Err(kube::Error::Api(e)) if matches!(e.code, 403 | 422) => {
                tracing::warn!(cluster = %names.cluster, pvc = %name, error = %e.message, "the API server refused to grow a volume");
                publish(ctx, resource, true, "VolumeResizeRefused", format!("PVC {name}: {}", e.message)).await;
                refused.insert(name, e.message);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut progress = resize::progress(&observed.pvcs, &refused);
    for (name, size) in asked {
        let capacity = progress.get(&name).and_then(|p| p.capacity.clone());
        progress.insert(name, VolumeResize { requested: size, capacity, state: "Resizing".into(), message: None });
    }
    for (name, message) in refused {
        let size = resize::to_grow(&desired.pvcs, &observed.pvcs)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
            .unwrap_or_default();
        progress.insert(
            name,
            VolumeResize { requested: size, capacity: None, state: "Refused".into(), message: Some(message) },
        );
    }
    Ok(progress)
}

/// Reconciles one cluster. Returns when to look again.
pub async fn reconcile(resource: Arc<PostgresCluster>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let cluster = Cluster::new(&resource)?;
    let names = &cluster.names;
    let now = jiff::Timestamp::now();
    let observed = observe::observe(&ctx.client, names, &named_secrets(&cluster)).await?;
    let secret_step = write_secrets(&ctx, &resource, &cluster, &observed, now).await?;
    let stored = delete_dead_pods(&ctx, &resource, names, &observed).await?;
    let desired = build::desired(&cluster)?;
    apply_desired(&ctx, &resource, names, &desired, &stored).await?;
    let volumes = grow_volumes(&ctx, &resource, names, &desired, &observed).await?;

    let reports = if ctx.read_instances {
        let (ca, token) = (secret_step.ca_pem.as_deref(), secret_step.api_token.as_deref());
        crate::instances::read_all(names, &observed.pods, ca, token).await
    } else {
        Default::default()
    };
    let now_text = now.to_string();
    let holder = observed.lease.as_ref().and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.clone());
    let targets = match secret_step.ca_pem.as_deref().map(crate::instances::tls_config) {
        Some(Ok(tls)) => crate::instances::targets(names, &observed.pods, &tls, secret_step.api_token.as_deref()),
        _ => BTreeMap::new(),
    };
    let sync_standbys: Vec<String> = holder
        .as_ref()
        .and_then(|h| reports.get(h))
        .and_then(|r| r.as_ref().ok())
        .and_then(|s| s.lease.as_ref())
        .map(|l| l.sync_standbys.clone())
        .unwrap_or_default();
    scale::run(&ctx, &resource, &cluster, &observed, &targets, holder.as_deref(), &sync_standbys).await?;
    let pod_hashes: BTreeMap<String, String> =
        all_planned(&desired)?.into_iter().filter(|p| p.resource.kind == "Pod").map(|p| (p.name, p.hash)).collect();
    let stored_pods: BTreeMap<String, Option<String>> =
        observed.stored.iter().filter(|((k, _), _)| k == "Pod").map(|((_, n), h)| (n.clone(), h.clone())).collect();
    let rollout_inputs = rollout::Inputs {
        names,
        instances: cluster.spec().instances,
        pods: &observed.pods,
        stored: &stored_pods,
        desired: &pod_hashes,
        holder: holder.as_deref(),
        reports: &reports,
        strategy: cluster.spec().primary_update_strategy,
    };
    // A primary on a cordoned node hands over first; a rolling update waits for the next pass.
    let drain_step = drain::next(names, &observed.pods, holder.as_deref(), &reports, &ctx.cordoned.nodes());
    let rolling = match drain::run(&ctx, &resource, drain_step, &targets).await {
        Some(note) => Some((false, note)),
        None => rollout::run(&ctx, &resource, &rollout_inputs, &targets).await?,
    };
    let mut requests = resource.status.as_ref().map(|s| s.requests.clone()).unwrap_or_default();
    requests.extend(act::act(&ctx, &resource, &cluster, &targets, holder.as_deref(), &now_text).await?);
    let (new_status, notices) = status::compute(&status::Inputs {
        names,
        instances: cluster.spec().instances,
        generation: resource.metadata.generation,
        image: cluster.image(),
        previous: resource.status.as_ref(),
        pods: &observed.pods,
        lease: observed.lease.as_ref(),
        reports: &reports,
        problems: &secret_step.problems,
        server_not_after: secret_step.server_not_after.clone(),
        volumes,
        requests,
        rolling,
        now: &now_text,
    });
    for n in notices {
        publish(&ctx, &resource, n.warning, n.reason, n.note).await;
    }
    write_status(&ctx, &resource, names, &new_status).await?;
    let phase = new_status.phase.as_deref().unwrap_or_default();
    ctx.observer.phase(&names.namespace, &names.cluster, phase);
    Ok(Action::requeue(if phase == status::PHASE_HEALTHY { HEALTHY_REQUEUE } else { UNHEALTHY_REQUEUE }))
}

/// Step 6: the status, only when it changed.
async fn write_status(
    ctx: &Context,
    resource: &PostgresCluster,
    names: &crate::names::Names,
    new_status: &crate::crd::PostgresClusterStatus,
) -> Result<(), ReconcileError> {
    let serialize = |source| ReconcileError::Serialize { what: "status".into(), source };
    let old = serde_json::to_value(resource.status.clone().unwrap_or_default()).map_err(serialize)?;
    let new = serde_json::to_value(new_status).map_err(serialize)?;
    if old != new || resource.status.is_none() {
        let api: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
        let patch = serde_json::json!({ "status": merge_patch(&old, &new) });
        api.patch_status(&names.cluster, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod merge_patch_tests {
    use serde_json::json;

    use super::merge_patch;

    #[test]
    fn removed_keys_become_null_and_unchanged_ones_are_left_out() {
        let old = json!({"a": 1, "b": {"x": 1, "y": 2}, "c": 3});
        let new = json!({"a": 1, "b": {"x": 1}, "d": 4});
        assert_eq!(merge_patch(&old, &new), json!({"b": {"y": null}, "c": null, "d": 4}));
    }
}

#[cfg(test)]
mod status_tests;

#[cfg(test)]
mod reconcile_tests;
