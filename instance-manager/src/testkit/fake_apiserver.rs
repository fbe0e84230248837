//! A Kubernetes API server in memory, for integration tests of the `kubernetes` lease and
//! routing backends: plain HTTP, no authentication, and just what those backends call.
//!
//! | resource | path | verbs |
//! |---|---|---|
//! | `leases` | `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]` | GET, POST, PUT, PATCH, DELETE |
//! | `endpointslices` | `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices[/{name}]` | GET, POST, PUT, PATCH, DELETE |
//! | `pods` | `/api/v1/namespaces/{ns}/pods[/{name}]` | GET, POST, PUT, PATCH, DELETE |
//!
//! Semantics are the API server's where pgwarden depends on them: every write gets a new
//! `metadata.resourceVersion` (one counter for all objects, as etcd's revision); a `PUT` or
//! `PATCH` carrying a `resourceVersion` other than the stored one is refused with 409 Conflict;
//! a `POST` of an existing name with 409 AlreadyExists; a `GET`, `PUT` or `PATCH` of a missing
//! object with 404 NotFound — each failure with a `Status` body. `PATCH` takes a JSON merge
//! patch (RFC 7386; a strategic merge patch is treated the same, which is exact for labels
//! and annotations). Pods are never created by a patch: tests create them with
//! [`FakeApiServer::add_pod`], as the StatefulSet would.
//!
//! It can misbehave like a real API server on a bad day — stall, answer 5xx, reset connections,
//! throttle — per verb and resource, for a window or until cleared: [`FakeApiServer::set_fault`]
//! (see [`api_faults`](super::api_faults)), or over HTTP through its control endpoint
//! (`/testkit/faults`, see [`api_serve`](super::api_serve)). Every stored version of every
//! object is kept ([`FakeApiServer::history`]), so a test can check what was *ever* written,
//! not only what is stored at the end.
//!
//! [`FakeApiServer::start_in_hub`] binds inside a [`TestNetwork`]'s hub, so that cutting a
//! host off also cuts it off from this API server.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::TestDir;
use super::api_faults::{Fault, FaultId, Verbs};
use super::api_serve::{SharedFaults, accept_loop};
use super::netns::{TestNetwork, in_netns};

/// The resources served: plural name, group/version, kind.
const RESOURCES: &[(&str, &str, &str)] = &[
    ("leases", "coordination.k8s.io/v1", "Lease"),
    ("endpointslices", "discovery.k8s.io/v1", "EndpointSlice"),
    ("pods", "v1", "Pod"),
];

/// Objects by (resource, namespace, name), the last resourceVersion handed out, and every
/// version ever stored (`Value::Null` for a deletion).
#[derive(Default)]
struct Store {
    revision: u64,
    objects: BTreeMap<(String, String, String), Value>,
    history: BTreeMap<(String, String, String), Vec<Value>>,
}

type Shared = Arc<Mutex<Store>>;

/// A running fake API server, stopped on drop.
pub struct FakeApiServer {
    store: Shared,
    faults: SharedFaults,
    addr: SocketAddr,
    namespace: String,
    dir: TestDir,
    _task: AbortOnDropHandle<()>,
}

impl FakeApiServer {
    /// Serves on `addr` (port 0: any) in this process' network namespace. Must be called
    /// inside a tokio runtime. `namespace` is the kubeconfig's default namespace.
    pub fn start(addr: SocketAddr, namespace: &str) -> Result<Self, String> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        Self::serve(listener, namespace)
    }

    /// Serves on the bridge address of `net`'s hub, reachable from every host that is not cut off.
    pub fn start_in_hub(net: &TestNetwork, namespace: &str) -> Result<Self, String> {
        let addr = SocketAddr::from((net.hub_ip(), 0));
        let listener = in_netns(&net.hub(), || std::net::TcpListener::bind(addr))?
            .map_err(|e| format!("cannot bind {addr} in {}: {e}", net.hub()))?;
        Self::serve(listener, namespace)
    }

    fn serve(listener: std::net::TcpListener, namespace: &str) -> Result<Self, String> {
        let addr = listener.local_addr().map_err(|e| format!("listener address: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("cannot make {addr} non-blocking: {e}"))?;
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| format!("cannot serve {addr} with tokio: {e}"))?;
        let store = Shared::default();
        let faults = SharedFaults::default();
        let task = tokio::spawn(accept_loop(listener, router(Arc::clone(&store)), Arc::clone(&faults)));
        let dir = TestDir::new();
        let namespace = namespace.to_string();
        let server = Self { store, faults, addr, namespace, dir, _task: AbortOnDropHandle::new(task) };
        std::fs::write(server.kubeconfig(), server.kubeconfig_text())
            .map_err(|e| format!("cannot write {}: {e}", server.kubeconfig().display()))?;
        Ok(server)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The namespace of the kubeconfig's context.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A kubeconfig file for it (set `KUBECONFIG` to it).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn kubeconfig_text(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {ns}\n\
             current-context: fake\n",
            url = self.url(),
            ns = self.namespace,
        )
    }

    /// A client for it (from this process' network namespace). Unlike kube's default client it
    /// does not retry 429, 503 and 504 by itself, so that a test sees each answer of the server.
    pub fn client(&self) -> Result<kube::Client, String> {
        let uri = self.url().parse::<http::Uri>().map_err(|e| format!("{}: {e}", self.url()))?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = self.namespace.clone();
        config.default_retry = false;
        kube::Client::try_from(config).map_err(|e| format!("cannot build a client for {}: {e}", self.url()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored object `resource/name` in the default namespace.
    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&(resource.into(), self.namespace.clone(), name.into())).cloned()
    }

    /// Creates the pod `name` in the default namespace (as a StatefulSet would), so that the
    /// instance can label it.
    pub fn add_pod(&self, name: &str) {
        let pod = json!({"metadata": {"name": name}});
        let t = Target {
            resource: "pods".into(),
            api_version: "v1".into(),
            kind: "Pod".into(),
            ns: self.namespace.clone(),
            name: name.into(),
        };
        // An existing pod stays as it is.
        let _ = self.lock().create(&t, pod);
    }

    /// Deletes `resource/name` from the default namespace (as `kubectl delete` would); whether
    /// it existed.
    pub fn delete(&self, resource: &str, name: &str) -> bool {
        self.lock().delete(&(resource.into(), self.namespace.clone(), name.into()))
    }

    /// Every version of `resource/name` ever stored, oldest first; `Value::Null` marks a
    /// deletion.
    pub fn history(&self, resource: &str, name: &str) -> Vec<Value> {
        self.lock().history.get(&(resource.into(), self.namespace.clone(), name.into())).cloned().unwrap_or_default()
    }

    /// Lays `fault` on the requests of `verbs` to every resource, for `window` (until cleared
    /// with `None`). The newest matching fault applies.
    pub fn set_fault(&self, fault: Fault, verbs: Verbs, window: Option<Duration>) -> FaultId {
        super::api_serve::lock(&self.faults).add(fault, verbs, None, window, Instant::now())
    }

    /// Like [`set_fault`](Self::set_fault), on one resource only (`leases`, `endpointslices`,
    /// `pods`).
    pub fn set_fault_on(&self, resource: &str, fault: Fault, verbs: Verbs, window: Option<Duration>) -> FaultId {
        super::api_serve::lock(&self.faults).add(fault, verbs, Some(resource.into()), window, Instant::now())
    }

    /// Clears one fault; requests it holds are then served.
    pub fn clear_fault(&self, id: FaultId) {
        super::api_serve::lock(&self.faults).remove(id);
    }

    /// Clears every fault.
    pub fn clear_faults(&self) {
        super::api_serve::lock(&self.faults).clear();
    }

    /// The Lease `name`.
    pub fn lease(&self, name: &str) -> Option<Lease> {
        self.get("leases", name).and_then(|v| serde_json::from_value(v).ok())
    }

    /// The EndpointSlice `name`.
    pub fn endpoint_slice(&self, name: &str) -> Option<EndpointSlice> {
        self.get("endpointslices", name).and_then(|v| serde_json::from_value(v).ok())
    }

    /// The pod `name`.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        self.get("pods", name).and_then(|v| serde_json::from_value(v).ok())
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer").field("addr", &self.addr).field("namespace", &self.namespace).finish()
    }
}

fn router(store: Shared) -> Router {
    Router::new()
        .route("/apis/{group}/{version}/namespaces/{ns}/{resource}", post(create))
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{resource}/{name}",
            get(read).put(replace).patch(patch).delete(remove),
        )
        .route("/api/{version}/namespaces/{ns}/{resource}", post(create))
        .route("/api/{version}/namespaces/{ns}/{resource}/{name}", get(read).put(replace).patch(patch).delete(remove))
        .fallback(|| async { Failure::not_found("the server could not find the requested resource".into()) })
        .with_state(store)
}

/// A failed request, answered with a `Status` body as the API server words failures.
#[derive(Debug)]
struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl Failure {
    fn not_found(message: String) -> Self {
        Self { code: StatusCode::NOT_FOUND, reason: "NotFound", message }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self { code: StatusCode::BAD_REQUEST, reason: "BadRequest", message: message.into() }
    }

    fn conflict(reason: &'static str, message: String) -> Self {
        Self { code: StatusCode::CONFLICT, reason, message }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        (self.code, axum::Json(body)).into_response()
    }
}

/// What a request addresses.
#[derive(Clone)]
struct Target {
    resource: String,
    api_version: String,
    kind: String,
    ns: String,
    name: String,
}

impl Target {
    /// Reads the path parameters; an unknown resource or group/version is a 404.
    fn of(params: &BTreeMap<String, String>) -> Result<Self, Failure> {
        let p = |k: &str| params.get(k).cloned().unwrap_or_default();
        let api_version = match params.get("group") {
            Some(group) => format!("{group}/{}", p("version")),
            None => p("version"),
        };
        let resource = p("resource");
        let Some((_, _, kind)) = RESOURCES.iter().find(|(r, v, _)| *r == resource && *v == api_version) else {
            return Err(Failure::not_found(format!(
                "the server could not find the requested resource ({api_version} {resource})"
            )));
        };
        Ok(Self { kind: kind.to_string(), resource, api_version, ns: p("ns"), name: p("name") })
    }

    fn key(&self) -> (String, String, String) {
        (self.resource.clone(), self.ns.clone(), self.name.clone())
    }

    /// `leases.coordination.k8s.io "name"`, as the API server words it.
    fn describe(&self) -> String {
        match self.api_version.split_once('/') {
            Some((group, _)) => format!("{}.{group} \"{}\"", self.resource, self.name),
            None => format!("{} \"{}\"", self.resource, self.name),
        }
    }

    fn not_found(&self) -> Failure {
        Failure::not_found(format!("{} not found", self.describe()))
    }
}

impl Store {
    /// Stores a new object of `t`'s resource and namespace (its name is the object's).
    fn create(&mut self, t: &Target, mut obj: Value) -> Result<Value, Failure> {
        let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
            let message = "metadata.name: Required value".to_string();
            return Err(Failure { code: StatusCode::UNPROCESSABLE_ENTITY, reason: "Invalid", message });
        };
        let t = Target { name, ..t.clone() };
        if self.objects.contains_key(&t.key()) {
            return Err(Failure::conflict("AlreadyExists", format!("{} already exists", t.describe())));
        }
        self.revision += 1;
        obj["apiVersion"] = json!(t.api_version);
        obj["kind"] = json!(t.kind);
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(t.ns);
        meta["resourceVersion"] = json!(self.revision.to_string());
        meta["uid"] = json!(format!("fake-uid-{}", self.revision));
        meta["creationTimestamp"] = json!(jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        self.store(t.key(), obj.clone());
        Ok(obj)
    }

    /// Replaces the stored object with `obj` if `obj` carries no resourceVersion or the stored one.
    fn update(&mut self, t: &Target, mut obj: Value) -> Result<Value, Failure> {
        let Some(stored) = self.objects.get(&t.key()) else { return Err(t.not_found()) };
        if let Some(v) = obj["metadata"]["resourceVersion"].as_str()
            && Some(v) != stored["metadata"]["resourceVersion"].as_str()
        {
            return Err(Failure::conflict(
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}: the object has been modified; please apply your \
                     changes to the latest version and try again",
                    t.describe()
                ),
            ));
        }
        self.revision += 1;
        obj["apiVersion"] = json!(t.api_version);
        obj["kind"] = json!(t.kind);
        let keep = |field: &str| stored["metadata"][field].clone();
        let (uid, created) = (keep("uid"), keep("creationTimestamp"));
        let meta = &mut obj["metadata"];
        meta["namespace"] = json!(t.ns);
        meta["resourceVersion"] = json!(self.revision.to_string());
        meta["uid"] = uid;
        meta["creationTimestamp"] = created;
        self.store(t.key(), obj.clone());
        Ok(obj)
    }

    fn store(&mut self, key: (String, String, String), obj: Value) {
        self.history.entry(key.clone()).or_default().push(obj.clone());
        self.objects.insert(key, obj);
    }

    /// Removes an object; whether it existed.
    fn delete(&mut self, key: &(String, String, String)) -> bool {
        let existed = self.objects.remove(key).is_some();
        if existed {
            self.revision += 1;
            self.history.entry(key.clone()).or_default().push(Value::Null);
        }
        existed
    }
}

type Params = Path<BTreeMap<String, String>>;
type Answer = Result<(StatusCode, axum::Json<Value>), Failure>;

fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn read(State(store): State<Shared>, Path(params): Params) -> Answer {
    let t = Target::of(&params)?;
    let obj = lock(&store).objects.get(&t.key()).cloned().ok_or_else(|| t.not_found())?;
    Ok((StatusCode::OK, axum::Json(obj)))
}

async fn remove(State(store): State<Shared>, Path(params): Params) -> Answer {
    let t = Target::of(&params)?;
    if !lock(&store).delete(&t.key()) {
        return Err(t.not_found());
    }
    let details = json!({"name": t.name, "kind": t.resource});
    Ok((
        StatusCode::OK,
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": details})),
    ))
}

async fn create(State(store): State<Shared>, Path(params): Params, body: Bytes) -> Answer {
    let t = Target::of(&params)?;
    let obj = parse(&body)?;
    if obj["metadata"]["namespace"].as_str().is_some_and(|ns| ns != t.ns) {
        return Err(Failure::bad_request("the namespace of the object does not match the URL"));
    }
    Ok((StatusCode::CREATED, axum::Json(lock(&store).create(&t, obj)?)))
}

async fn replace(State(store): State<Shared>, Path(params): Params, body: Bytes) -> Answer {
    let t = Target::of(&params)?;
    let obj = parse(&body)?;
    if obj["metadata"]["name"].as_str() != Some(t.name.as_str()) {
        return Err(Failure::bad_request("the name of the object does not match the URL"));
    }
    Ok((StatusCode::OK, axum::Json(lock(&store).update(&t, obj)?)))
}

async fn patch(State(store): State<Shared>, Path(params): Params, headers: HeaderMap, body: Bytes) -> Answer {
    let t = Target::of(&params)?;
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !matches!(content_type, "application/merge-patch+json" | "application/strategic-merge-patch+json") {
        return Err(Failure {
            code: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "UnsupportedMediaType",
            message: format!("the fake API server takes merge patches only, not {content_type:?}"),
        });
    }
    let patch = parse(&body)?;
    let mut store = lock(&store);
    let mut obj = store.objects.get(&t.key()).cloned().ok_or_else(|| t.not_found())?;
    // A resourceVersion in the patch is a precondition; without one the patch applies as is.
    let stored_version = obj["metadata"]["resourceVersion"].clone();
    merge_patch(&mut obj, &patch);
    if patch["metadata"]["resourceVersion"].is_null() {
        obj["metadata"]["resourceVersion"] = stored_version;
    }
    Ok((StatusCode::OK, axum::Json(store.update(&t, obj)?)))
}

fn parse(body: &[u8]) -> Result<Value, Failure> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Failure::bad_request("the body is not a JSON object")),
        Err(e) => Err(Failure::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in fields {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// `127.0.0.1:0`: where to [`start`](FakeApiServer::start) a server for clients in the
/// test's own network namespace.
pub fn loopback() -> SocketAddr {
    SocketAddr::from((IpAddr::from([127, 0, 0, 1]), 0))
}

#[cfg(test)]
#[path = "fake_apiserver_tests.rs"]
mod tests;
