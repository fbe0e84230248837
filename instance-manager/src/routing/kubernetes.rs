//! Routing on Kubernetes: the `-rw` EndpointSlice and the pod's role label (docs/architecture.md §10).
//!
//! Each operation reads, asks the pure functions of [`super::slice`] what to do, and writes
//! with the `resourceVersion` of that read (the API server's compare-and-swap). A lost CAS
//! (409, or 404 on a `PUT`: the slice vanished) leads to a re-read and a new decision, at most
//! [`MAX_ATTEMPTS`] times. As in the lease store, requests are built with [`Api`] and sent with
//! [`kube::Client::send`] so that a 429's `Retry-After` is seen; a 429 is retried while its
//! wait fits in the call's deadline.
//!
//! Error classification: 403 → [`RoutingError::Forbidden`] with an RBAC hint; 401, 408, 5xx,
//! transport errors and persistent 429 → [`RoutingError::Unavailable`]; any other failure →
//! [`RoutingError::Rejected`].

use std::net::IpAddr;
use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{GetParams, Patch, PatchParams, PostParams};
use kube::client::Body;
use kube::core::{Request, Status};
use tokio::time::Instant;

use super::slice::{Publish, plan_publish, plan_release};
use super::{
    DEFAULT_CALL_DEADLINE, ROLE_LABEL, Result, Routing, RoutingError, RoutingFuture, desired_slice, with_deadline,
};

/// How many times a write is decided and sent before giving up with a conflict.
const MAX_ATTEMPTS: u32 = 4;
/// How many times one request is sent while the API server answers 429.
const RATE_LIMIT_ATTEMPTS: u32 = 5;
/// How long to wait after a 429 that did not say.
const DEFAULT_RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(500);
/// The shortest wait after a 429, so a `Retry-After: 0` cannot spin.
const MIN_RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(50);
/// The longest deadline a call may be given (keeps instant arithmetic far from overflow).
const MAX_CALL_DEADLINE: Duration = Duration::from_secs(3600);

/// [`Routing`] through the Kubernetes API: the `<cluster>-rw` EndpointSlice and this pod's
/// [`ROLE_LABEL`].
pub struct KubernetesRouting {
    client: kube::Client,
    slices: Request,
    pods: Request,
    namespace: String,
    cluster: String,
    pod_name: String,
    pod_ip: IpAddr,
    port: u16,
    deadline: Duration,
}

/// Whether a compare-and-swap write landed.
enum Cas {
    Landed,
    Lost,
}

/// What the API server answered.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

type BuiltRequest = std::result::Result<http::Request<Vec<u8>>, kube::core::request::Error>;

impl KubernetesRouting {
    /// Routing for the pod `pod_name` (address `pod_ip`, Postgres on `port`) of `cluster` in
    /// `namespace`. Each call takes at most [`DEFAULT_CALL_DEADLINE`]. Nothing is sent until
    /// the first call.
    pub fn new(
        client: kube::Client,
        namespace: impl Into<String>,
        cluster: impl Into<String>,
        pod_name: impl Into<String>,
        pod_ip: IpAddr,
        port: u16,
    ) -> Self {
        let namespace = namespace.into();
        let slices = Request::new(Api::<EndpointSlice>::namespaced(client.clone(), &namespace).resource_url());
        let pods = Request::new(Api::<Pod>::namespaced(client.clone(), &namespace).resource_url());
        let (cluster, pod_name) = (cluster.into(), pod_name.into());
        Self { client, slices, pods, namespace, cluster, pod_name, pod_ip, port, deadline: DEFAULT_CALL_DEADLINE }
    }

    /// Bounds every call, retries included, by `deadline` (at most an hour). Keep it inside
    /// the renew deadline: the HA loop waits for these calls.
    #[must_use]
    pub fn with_call_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline.min(MAX_CALL_DEADLINE);
        self
    }

    fn slice_name(&self) -> String {
        format!("{}-rw", self.cluster)
    }

    fn forbidden_hint(&self) -> String {
        format!(
            "the instance's ServiceAccount needs a Role in namespace {} granting get, create and update on \
             endpointslices (apiGroup discovery.k8s.io) and get and patch on pods (core apiGroup), bound by a \
             RoleBinding",
            self.namespace
        )
    }

    /// Sends one request; returns the status, `Retry-After` and the body.
    async fn send(&self, what: &str, request: http::Request<Vec<u8>>) -> Result<Answer> {
        let unavailable = |e: &dyn std::fmt::Display| RoutingError::Unavailable { message: format!("{what}: {e}") };
        let response = self.client.send(request.map(Body::from)).await.map_err(|e| unavailable(&e))?;
        let status = response.status();
        let header = response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
        let retry_after = header.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
        let body = response.into_body().collect_bytes().await.map_err(|e| unavailable(&e))?;
        Ok(Answer { status, retry_after, body: body.to_vec() })
    }

    /// Sends the request `build` makes, again after a 429 while the wait fits before `end`.
    async fn call(&self, what: &str, end: Instant, build: impl Fn() -> BuiltRequest) -> Result<Answer> {
        for _ in 0..RATE_LIMIT_ATTEMPTS {
            let request = build()
                .map_err(|e| RoutingError::Rejected { message: format!("{what}: cannot build the request: {e}") })?;
            let answer = self.send(what, request).await?;
            if answer.status != StatusCode::TOO_MANY_REQUESTS {
                return Ok(answer);
            }
            let in_body = serde_json::from_slice::<Status>(&answer.body)
                .ok()
                .and_then(|s| s.details)
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            let wait = answer.retry_after.or(in_body).unwrap_or(DEFAULT_RATE_LIMIT_BACKOFF).max(MIN_RATE_LIMIT_BACKOFF);
            if Instant::now().checked_add(wait).is_none_or(|then| then >= end) {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(RoutingError::Unavailable { message: format!("{what}: the API server kept rate-limiting (HTTP 429)") })
    }

    /// Classifies a failed answer (after the caller handled its own cases).
    fn failure(&self, what: &str, answer: &Answer) -> RoutingError {
        let detail = match serde_json::from_slice::<Status>(&answer.body) {
            Ok(s) if !s.message.is_empty() => s.message,
            _ => String::from_utf8_lossy(&answer.body).chars().take(200).collect(),
        };
        let message = format!("{what} answered HTTP {}: {detail}", answer.status.as_u16());
        match answer.status {
            StatusCode::FORBIDDEN => RoutingError::Forbidden { message, hint: self.forbidden_hint() },
            StatusCode::UNAUTHORIZED => RoutingError::Unavailable {
                message: format!("{message} (if this persists, check the ServiceAccount token mount)"),
            },
            s if s == StatusCode::REQUEST_TIMEOUT || s.is_server_error() => RoutingError::Unavailable { message },
            _ => RoutingError::Rejected { message },
        }
    }

    /// Reads the slice: `None` if there is none.
    async fn read_slice(&self, end: Instant) -> Result<Option<EndpointSlice>> {
        let (name, what) = (self.slice_name(), format!("get endpointslice {}/{}", self.namespace, self.slice_name()));
        let answer = self.call(&what, end, || self.slices.get(&name, &GetParams::default())).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(self.failure(&what, &answer));
        }
        serde_json::from_slice(&answer.body).map(Some).map_err(|e| RoutingError::Rejected {
            message: format!("{what}: the API server answered a malformed EndpointSlice: {e}"),
        })
    }

    /// Creates the slice, or replaces it at the `resourceVersion` it carries.
    async fn write_slice(&self, end: Instant, mut slice: EndpointSlice, create: bool) -> Result<Cas> {
        let verb = if create { "create" } else { "replace" };
        let (name, what) =
            (self.slice_name(), format!("{verb} endpointslice {}/{}", self.namespace, self.slice_name()));
        slice.metadata.managed_fields = None;
        if create {
            slice.metadata.resource_version = None;
        }
        let body = serde_json::to_vec(&slice)
            .map_err(|e| RoutingError::Rejected { message: format!("{what}: cannot serialise: {e}") })?;
        let pp = PostParams::default();
        let answer = self
            .call(&what, end, || {
                if create {
                    self.slices.create(&pp, body.clone())
                } else {
                    self.slices.replace(&name, &pp, body.clone())
                }
            })
            .await?;
        match answer.status {
            s if s.is_success() => Ok(Cas::Landed),
            StatusCode::CONFLICT => Ok(Cas::Lost),
            StatusCode::NOT_FOUND if !create => Ok(Cas::Lost),
            _ => Err(self.failure(&what, &answer)),
        }
    }

    async fn publish(&self, term: u64) -> Result<()> {
        let end = Instant::now() + self.deadline;
        for attempt in 1..=MAX_ATTEMPTS {
            let existing = self.read_slice(end).await?;
            let build = |e: Option<&EndpointSlice>| {
                desired_slice(&self.namespace, &self.cluster, &self.pod_name, self.pod_ip, self.port, term, e)
            };
            let (slice, create) = match plan_publish(term, existing.as_ref(), build) {
                Ok(Publish::Unchanged) => {
                    tracing::debug!(term, "the -rw endpointslice already routes to this pod");
                    return Ok(());
                }
                Ok(Publish::Create(slice)) => (slice, true),
                Ok(Publish::Replace(slice)) => (slice, false),
                Err(e) => {
                    tracing::warn!(term, error = %e, "not routing -rw to this pod");
                    return Err(e);
                }
            };
            match self.write_slice(end, slice, create).await? {
                Cas::Landed => {
                    tracing::info!(term, slice = %self.slice_name(), ip = %self.pod_ip, "routing -rw to this pod");
                    return Ok(());
                }
                Cas::Lost => tracing::debug!(term, attempt, "the -rw endpointslice changed under us; re-reading"),
            }
        }
        Err(RoutingError::Conflict { attempts: MAX_ATTEMPTS })
    }

    async fn release(&self, term: u64) -> Result<()> {
        let end = Instant::now() + self.deadline;
        for attempt in 1..=MAX_ATTEMPTS {
            let existing = self.read_slice(end).await?;
            let Some(emptied) = plan_release(term, existing.as_ref()) else {
                let stored = existing.as_ref().map(super::stored_term);
                tracing::debug!(term, ?stored, "the -rw endpointslice is not ours to empty (or already empty)");
                return Ok(());
            };
            match self.write_slice(end, emptied, false).await? {
                Cas::Landed => {
                    tracing::info!(term, slice = %self.slice_name(), "emptied the -rw endpointslice");
                    return Ok(());
                }
                Cas::Lost => tracing::debug!(term, attempt, "the -rw endpointslice changed under us; re-reading"),
            }
        }
        Err(RoutingError::Conflict { attempts: MAX_ATTEMPTS })
    }

    async fn label(&self, pod: &str, role: &str) -> Result<()> {
        let what = format!("label pod {}/{pod} {ROLE_LABEL}={role}", self.namespace);
        if !is_label_value(role) {
            return Err(RoutingError::Rejected { message: format!("{what}: {role:?} is not a valid label value") });
        }
        let patch = Patch::Merge(serde_json::json!({"metadata": {"labels": {ROLE_LABEL: role}}}));
        let end = Instant::now() + self.deadline;
        let answer = self.call(&what, end, || self.pods.patch(pod, &PatchParams::default(), &patch)).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => {
                tracing::warn!(pod, role, "cannot label this pod: it does not exist (ignored)");
                Ok(())
            }
            _ => Err(self.failure(&what, &answer)),
        }
    }
}

/// Whether `v` is a Kubernetes label value: at most 63 characters, alphanumerics and `-_.`
/// inside, alphanumeric at both ends (empty is allowed by Kubernetes, not by us).
fn is_label_value(v: &str) -> bool {
    let alnum_ends =
        v.starts_with(|c: char| c.is_ascii_alphanumeric()) && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    v.len() <= 63 && alnum_ends && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl std::fmt::Debug for KubernetesRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRouting")
            .field("namespace", &self.namespace)
            .field("cluster", &self.cluster)
            .field("pod_name", &self.pod_name)
            .field("pod_ip", &self.pod_ip)
            .field("port", &self.port)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Routing for KubernetesRouting {
    fn became_primary(&self, term: u64) -> RoutingFuture<'_> {
        Box::pin(with_deadline(self.publish(term), self.deadline))
    }

    fn released(&self, term: u64) -> RoutingFuture<'_> {
        Box::pin(with_deadline(self.release(term), self.deadline))
    }

    fn set_role_label<'a>(&'a self, role: &'a str) -> RoutingFuture<'a> {
        Box::pin(with_deadline(self.label(&self.pod_name, role), self.deadline))
    }

    fn set_member_role_label<'a>(&'a self, member: &'a str, role: &'a str) -> RoutingFuture<'a> {
        Box::pin(with_deadline(self.label(member, role), self.deadline))
    }

    fn describe(&self) -> String {
        let address = std::net::SocketAddr::new(self.pod_ip, self.port);
        format!(
            "kubernetes endpointslice {}/{} (pod {} at {address})",
            self.namespace,
            self.slice_name(),
            self.pod_name
        )
    }
}

#[cfg(test)]
#[path = "kubernetes_tests.rs"]
mod tests;
