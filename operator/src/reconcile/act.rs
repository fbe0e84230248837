//! Carrying out the requests of [`super::requests`]: calls to the instances' API (through
//! [`InstanceApi`], so tests script the instances), Pod deletions, and the acknowledgement —
//! the annotation removed, the outcome for `status.requests`, an Event.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::requests::{self, Request};
use super::{Context, ReconcileError, publish};
use crate::build::Cluster;
use crate::crd::{PostgresCluster, RequestOutcome};
use crate::instances::{self, ControlError, Target};
use crate::names::FIELD_MANAGER;

/// The instances' control routes, as the reconcile calls them.
pub trait InstanceApi: Send + Sync {
    /// `POST path` with `body` to `target`.
    fn post<'a>(
        &'a self,
        target: &'a Target,
        path: &'a str,
        body: Value,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ControlError>> + Send + 'a>>;

    /// `method path` to `target` with an optional JSON body, bounded by `timeout`: the answer
    /// whatever its status (the backup reconcile reads the code), `Err` when there is none. By
    /// default there is none: an implementation scripting only the control routes answers
    /// nothing else.
    fn request<'a>(
        &'a self,
        target: &'a Target,
        method: http::Method,
        path: &'a str,
        body: Option<Value>,
        timeout: std::time::Duration,
    ) -> Pin<Box<dyn Future<Output = Result<instances::Answer, String>> + Send + 'a>> {
        let _ = (target, body, timeout);
        Box::pin(async move { Err(format!("{method} {path} is not implemented here")) })
    }
}

/// The real instances, over HTTPS.
#[derive(Debug, Default)]
pub struct Https;

impl InstanceApi for Https {
    fn post<'a>(
        &'a self,
        target: &'a Target,
        path: &'a str,
        body: Value,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ControlError>> + Send + 'a>> {
        Box::pin(instances::post(target, path, body))
    }

    fn request<'a>(
        &'a self,
        target: &'a Target,
        method: http::Method,
        path: &'a str,
        body: Option<Value>,
        timeout: std::time::Duration,
    ) -> Pin<Box<dyn Future<Output = Result<instances::Answer, String>> + Send + 'a>> {
        Box::pin(instances::request(target, method, path, body, timeout))
    }
}

/// What became of one request: acknowledged (`Some`) or to try again (`None`).
type Outcome = Option<(bool, String)>;

async fn control(ctx: &Context, targets: &BTreeMap<String, Target>, list: &[String], path: &str) -> Outcome {
    let mut done = Vec::new();
    for name in list {
        let Some(target) = targets.get(name) else {
            return None; // not scheduled yet, or no IP: later
        };
        match ctx.instance_api.post(target, path, json!({})).await {
            Ok(_) => done.push(name.clone()),
            Err(ControlError::Refused(m)) => return Some((false, m)),
            Err(ControlError::Unreachable(m)) => {
                tracing::warn!(instance = %name, error = %m, "a request could not reach its instance; trying again");
                return None;
            }
        }
    }
    Some((true, format!("{path} done on {}", done.join(", "))))
}

async fn switchover(
    ctx: &Context,
    targets: &BTreeMap<String, Target>,
    primary: Option<&str>,
    target: Option<&str>,
) -> Outcome {
    let Some(primary) = primary else {
        return Some((false, "no primary holds the lease: nothing to switch over".into()));
    };
    if target == Some(primary) {
        return Some((false, format!("{primary} is the primary already")));
    }
    let t = targets.get(primary)?;
    match ctx.instance_api.post(t, "/switchover", json!({"target": target})).await {
        Ok(answer) => {
            let new = answer.get("primary").and_then(Value::as_str).unwrap_or("?");
            Some((true, format!("{primary} handed the primary over to {new}")))
        }
        Err(ControlError::Refused(m)) => Some((false, m)),
        Err(ControlError::Unreachable(m)) => {
            tracing::warn!(primary, error = %m, "a switchover could not reach the primary; trying again");
            None
        }
    }
}

async fn restart(ctx: &Context, ns: &str, list: &[String]) -> Result<Outcome, ReconcileError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for name in list {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some((true, format!("deleted {}; created again on their PVCs", list.join(", ")))))
}

/// Carries out the requests on `resource`; the outcomes to record, by annotation.
pub async fn act(
    ctx: &Context,
    resource: &PostgresCluster,
    cluster: &Cluster<'_>,
    targets: &BTreeMap<String, Target>,
    primary: Option<&str>,
    now: &str,
) -> Result<BTreeMap<String, RequestOutcome>, ReconcileError> {
    let names = &cluster.names;
    let annotations = resource.metadata.annotations.clone().unwrap_or_default();
    let mut outcomes = BTreeMap::new();
    for p in requests::parse(&annotations, names, cluster.spec().instances) {
        let outcome = match &p.request {
            Err(why) => Some((false, why.clone())),
            Ok(Request::Switchover { target }) => switchover(ctx, targets, primary, target.as_deref()).await,
            Ok(Request::Fence(list)) => control(ctx, targets, list, "/fence").await,
            Ok(Request::Unfence(list)) => control(ctx, targets, list, "/unfence").await,
            Ok(Request::Restart(list)) => restart(ctx, &names.namespace, list).await?,
        };
        let Some((ok, message)) = outcome else { continue };
        let api: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
        let patch = json!({"metadata": {"annotations": {p.annotation: null}}});
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        api.patch(&names.cluster, &params, &Patch::Merge(&patch)).await?;
        let reason = if ok { "RequestDone" } else { "RequestRefused" };
        publish(ctx, resource, !ok, reason, format!("{}={}: {message}", p.annotation, p.value)).await;
        let result = if ok { "Done" } else { "Refused" };
        outcomes.insert(
            p.annotation.to_owned(),
            RequestOutcome { value: p.value.clone(), result: result.into(), message, at: now.to_owned() },
        );
    }
    Ok(outcomes)
}
