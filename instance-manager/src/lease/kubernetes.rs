//! The lease as a `coordination.k8s.io/v1` Lease object (docs/architecture.md §4.1).
//!
//! Mapping of [`LeaseRecord`]:
//!
//! | record | Lease |
//! |---|---|
//! | `holder` | `spec.holderIdentity` (`""` reads as none, as client-go writes on release) |
//! | `lease_duration_seconds` | `spec.leaseDurationSeconds` (absent reads as 0) |
//! | `acquire_time`, `renew_time` | `spec.acquireTime`, `spec.renewTime` (`MicroTime`) |
//! | `transitions` | `spec.leaseTransitions` (`i32`: saturates on write, negative is malformed) |
//! | `sync_standbys` | annotation `pgwarden.io/sync-standbys`, comma-separated, sorted; absent when empty |
//! | `switchover_to` | annotation `pgwarden.io/switchover-to`; absent when none |
//! | `cluster`, `system_identifier` | annotations `pgwarden.io/cluster`, `pgwarden.io/system-identifier` |
//!
//! The compare-and-swap is the API server's: [`replace`](LeaseStore::replace) is a `PUT` whose
//! body carries `metadata.resourceVersion = expected`, which the server accepts only if it is
//! still current, answering 409 Conflict otherwise. A `PUT` sends the whole object, so it starts
//! from the object last read at that version: labels, other annotations, owner references and
//! the spec fields pgwarden does not use (`preferredHolder`, `strategy`) survive our writes.
//!
//! Requests are built with [`Api`] and sent with [`kube::Client::send`] rather than through
//! `Api::get`/`replace`, because those drop the response headers, and an API server that
//! throttles (HTTP 429, max-in-flight or priority-and-fairness) says how long to wait in the
//! `Retry-After` header, often with a plain-text body.
//!
//! Error classification: 409 → [`LeaseError::Conflict`]; 404 → none on `get`, conflict on
//! `replace` (the lease is gone: re-read, then create); 429 → [`LeaseError::RateLimited`];
//! 401, 408, 5xx and transport errors → [`LeaseError::Unavailable`] (401 because the client
//! re-reads a rotated service-account token by itself); 403 and any other status →
//! [`LeaseError::Fatal`] with a hint.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{GetParams, PostParams};
use kube::client::Body;
use kube::core::{Request, Status};

use super::{LeaseError, LeaseFuture, LeaseRecord, LeaseStore, Result, Version};

/// Annotation holding [`LeaseRecord::sync_standbys`], comma-separated.
pub const SYNC_STANDBYS_ANNOTATION: &str = "pgwarden.io/sync-standbys";
/// Annotation holding [`LeaseRecord::switchover_to`].
pub const SWITCHOVER_TO_ANNOTATION: &str = "pgwarden.io/switchover-to";
/// Annotation holding [`LeaseRecord::cluster`].
pub const CLUSTER_ANNOTATION: &str = "pgwarden.io/cluster";
/// Annotation holding [`LeaseRecord::system_identifier`].
pub const SYSTEM_IDENTIFIER_ANNOTATION: &str = "pgwarden.io/system-identifier";

/// A [`LeaseStore`] on one Kubernetes Lease.
pub struct KubernetesLeaseStore {
    client: kube::Client,
    request: Request,
    namespace: String,
    name: String,
    /// The object of the last successful read or write, the base of the next `PUT`.
    last_seen: Mutex<Option<Lease>>,
}

impl KubernetesLeaseStore {
    /// A store on the Lease `namespace/name` (typically `<cluster>-primary`). Nothing is sent
    /// until the first operation.
    pub fn new(client: kube::Client, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = namespace.into();
        let api: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        let request = Request::new(api.resource_url());
        Self { client, request, namespace, name: name.into(), last_seen: Mutex::new(None) }
    }

    fn remember(&self, lease: Option<Lease>) {
        *self.last_seen.lock().unwrap_or_else(PoisonError::into_inner) = lease;
    }

    /// The last object seen, if it is at `version`.
    fn seen_at(&self, version: &Version) -> Option<Lease> {
        let seen = self.last_seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.as_ref().filter(|l| l.metadata.resource_version.as_deref() == Some(version.0.as_str())).cloned()
    }

    /// Sends a request; returns the status and the body.
    async fn send(
        &self,
        verb: &str,
        request: std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Answer> {
        let request = request.map_err(|e| self.fatal(verb, &format!("cannot build the request: {e}")))?;
        let response = self
            .client
            .send(request.map(Body::from))
            .await
            .map_err(|e| LeaseError::Unavailable { message: format!("cannot {verb} {}: {e}", self.describe()) })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.into_body().collect_bytes().await.map_err(|e| LeaseError::Unavailable {
            message: format!("cannot read the answer to {verb} {}: {e}", self.describe()),
        })?;
        Ok(Answer { status, retry_after, body: body.to_vec() })
    }

    /// Decodes a successful answer carrying the Lease.
    fn decode(&self, verb: &str, answer: &Answer) -> Result<(LeaseRecord, Version, Lease)> {
        let lease: Lease = serde_json::from_slice(&answer.body)
            .map_err(|e| self.fatal(verb, &format!("the API server answered a malformed Lease: {e}")))?;
        let (record, version) = lease_to_record(&lease).map_err(|why| self.fatal(verb, &why.0))?;
        Ok((record, version, lease))
    }

    /// Classifies a failed answer (anything but 2xx, after the caller handled its own cases).
    fn failure(&self, verb: &str, answer: &Answer) -> LeaseError {
        let status = answer.status;
        let parsed: Option<Status> = serde_json::from_slice(&answer.body).ok();
        let detail = match &parsed {
            Some(s) if !s.message.is_empty() => s.message.clone(),
            _ => String::from_utf8_lossy(&answer.body).chars().take(200).collect(),
        };
        let what = format!("{verb} {} answered HTTP {}: {detail}", self.describe(), status.as_u16());
        match status {
            StatusCode::CONFLICT => LeaseError::Conflict,
            StatusCode::TOO_MANY_REQUESTS => {
                let in_body = parsed
                    .and_then(|s| s.details)
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(u64::from(s)));
                LeaseError::RateLimited { retry_after: answer.retry_after.or(in_body) }
            }
            StatusCode::FORBIDDEN => LeaseError::Fatal {
                message: format!(
                    "{what}; hint: the instance's ServiceAccount needs a Role in namespace {} granting \
                     get, create and update on leases (apiGroup coordination.k8s.io), bound by a RoleBinding",
                    self.namespace
                ),
            },
            StatusCode::UNAUTHORIZED => LeaseError::Unavailable {
                message: format!("{what} (if this persists, check the ServiceAccount token mount)"),
            },
            StatusCode::REQUEST_TIMEOUT => LeaseError::Unavailable { message: what },
            s if s.is_server_error() => LeaseError::Unavailable { message: what },
            _ => LeaseError::Fatal { message: what },
        }
    }

    fn fatal(&self, verb: &str, why: &str) -> LeaseError {
        LeaseError::Fatal { message: format!("cannot {verb} {}: {why}", self.describe()) }
    }

    async fn do_get(&self) -> Result<Option<(LeaseRecord, Version)>> {
        let answer = self.send("get", self.request.get(&self.name, &GetParams::default())).await?;
        if answer.status == StatusCode::NOT_FOUND {
            self.remember(None);
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(self.failure("get", &answer));
        }
        let (record, version, lease) = self.decode("get", &answer)?;
        self.remember(Some(lease));
        Ok(Some((record, version)))
    }

    async fn do_write(&self, record: &LeaseRecord, expected: Option<&Version>) -> Result<Version> {
        let verb = if expected.is_some() { "replace" } else { "create" };
        let base = expected.and_then(|v| self.seen_at(v)).unwrap_or_default();
        let mut lease = record_to_lease(record, base).map_err(|why| self.fatal(verb, &why.0))?;
        lease.metadata.name = Some(self.name.clone());
        lease.metadata.namespace = Some(self.namespace.clone());
        lease.metadata.managed_fields = None;
        lease.metadata.resource_version = expected.map(|v| v.0.clone());
        let body = serde_json::to_vec(&lease).map_err(|e| self.fatal(verb, &format!("cannot serialise: {e}")))?;
        let request = match expected {
            Some(_) => self.request.replace(&self.name, &PostParams::default(), body),
            None => self.request.create(&PostParams::default(), body),
        };
        let answer = self.send(verb, request).await?;
        if answer.status == StatusCode::NOT_FOUND && expected.is_some() {
            return Err(LeaseError::Conflict);
        }
        if !answer.status.is_success() {
            return Err(self.failure(verb, &answer));
        }
        let (_, version, lease) = self.decode(verb, &answer)?;
        self.remember(Some(lease));
        Ok(version)
    }
}

impl std::fmt::Debug for KubernetesLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesLeaseStore").field("namespace", &self.namespace).field("name", &self.name).finish()
    }
}

/// What the API server answered.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl LeaseStore for KubernetesLeaseStore {
    fn get(&self) -> LeaseFuture<'_, Option<(LeaseRecord, Version)>> {
        Box::pin(self.do_get())
    }

    fn create<'a>(&'a self, record: &'a LeaseRecord) -> LeaseFuture<'a, Version> {
        Box::pin(self.do_write(record, None))
    }

    fn replace<'a>(&'a self, record: &'a LeaseRecord, expected: &'a Version) -> LeaseFuture<'a, Version> {
        Box::pin(self.do_write(record, Some(expected)))
    }

    fn describe(&self) -> String {
        format!("kubernetes lease {}/{}", self.namespace, self.name)
    }
}

/// A Lease object that cannot hold or give a lease record: what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Malformed(String);

/// Writes `record` into `base` (the object last read, or an empty one).
fn record_to_lease(record: &LeaseRecord, mut base: Lease) -> std::result::Result<Lease, Malformed> {
    let record = record.normalized();
    if let Some(bad) =
        record.sync_standbys.iter().find(|s| s.is_empty() || s.contains(',') || s.contains(char::is_whitespace))
    {
        return Err(Malformed(format!(
            "synchronous standby name {bad:?} cannot be stored in a comma-separated annotation"
        )));
    }
    let mut annotations = base.metadata.annotations.take().unwrap_or_default();
    set_annotation(
        &mut annotations,
        SYNC_STANDBYS_ANNOTATION,
        Some(record.sync_standbys.join(",")).filter(|s| !s.is_empty()),
    );
    set_annotation(&mut annotations, SWITCHOVER_TO_ANNOTATION, record.switchover_to.clone());
    set_annotation(&mut annotations, CLUSTER_ANNOTATION, record.cluster.clone());
    set_annotation(&mut annotations, SYSTEM_IDENTIFIER_ANNOTATION, record.system_identifier.clone());
    base.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());

    let spec = base.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = record.holder.clone();
    spec.lease_duration_seconds = Some(i32::try_from(record.lease_duration_seconds).unwrap_or(i32::MAX));
    spec.acquire_time = record.acquire_time.map(MicroTime);
    spec.renew_time = record.renew_time.map(MicroTime);
    spec.lease_transitions = Some(i32::try_from(record.transitions).unwrap_or(i32::MAX));
    Ok(base)
}

fn set_annotation(annotations: &mut BTreeMap<String, String>, key: &str, value: Option<String>) {
    match value {
        Some(value) => annotations.insert(key.to_string(), value),
        None => annotations.remove(key),
    };
}

/// Reads the record and version out of a Lease; the error says what is malformed.
fn lease_to_record(lease: &Lease) -> std::result::Result<(LeaseRecord, Version), Malformed> {
    let version = lease.metadata.resource_version.clone();
    let version = version.ok_or_else(|| Malformed("the Lease has no metadata.resourceVersion".into()))?;
    let spec = lease.spec.clone().unwrap_or_default();
    let non_negative = |field: &str, v: Option<i32>| {
        u32::try_from(v.unwrap_or(0))
            .map_err(|_| Malformed(format!("spec.{field} is negative ({v:?}); hint: fix or delete the Lease")))
    };
    let annotation = |key: &str| lease.metadata.annotations.as_ref().and_then(|a| a.get(key));
    let mut sync_standbys: Vec<String> = annotation(SYNC_STANDBYS_ANNOTATION)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    sync_standbys.sort();
    sync_standbys.dedup();
    let record = LeaseRecord {
        holder: spec.holder_identity.filter(|h| !h.is_empty()),
        lease_duration_seconds: non_negative("leaseDurationSeconds", spec.lease_duration_seconds)?,
        acquire_time: spec.acquire_time.map(|t| t.0),
        renew_time: spec.renew_time.map(|t| t.0),
        transitions: u64::from(non_negative("leaseTransitions", spec.lease_transitions)?),
        sync_standbys,
        switchover_to: annotation(SWITCHOVER_TO_ANNOTATION).filter(|s| !s.is_empty()).cloned(),
        cluster: annotation(CLUSTER_ANNOTATION).filter(|s| !s.is_empty()).cloned(),
        system_identifier: annotation(SYSTEM_IDENTIFIER_ANNOTATION).filter(|s| !s.is_empty()).cloned(),
    };
    Ok((record, Version(version)))
}

#[cfg(test)]
#[path = "kubernetes_tests.rs"]
mod tests;
