//! [`FakeApi`]: an in-memory Kubernetes API server behind a `tower::Service`, for a real
//! `kube::Client`. What it emulates and what it does not is in the docs of [`super`].

use std::any::TypeId;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::fault::Fault;
use super::request_log::RecordedRequest;
use super::routes::{self, ApiError, Incoming, Route};
use super::selector::decode_query;
use super::store::{Store, Writer};
use crate::crd::PostgresCluster;

/// The clock of a new [`FakeApi`] (`creationTimestamp`, `deletionTimestamp`); see
/// [`FakeApi::set_now`].
pub const DEFAULT_NOW: &str = "2026-01-01T00:00:00Z";

/// Where an object lives: its resource (`api_version`, `plural`), namespace (empty for a
/// cluster-scoped object) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `v1` for the core group, `{group}/{version}` otherwise.
    pub api_version: String,
    /// The resource's plural, as in the path (`pods`, `postgresclusters`).
    pub plural: String,
    /// Empty for a cluster-scoped object.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The key of `namespace/name` (`namespace` empty for a cluster-scoped kind) of
    /// `api_version`/`plural`.
    pub fn new(api_version: &str, plural: &str, namespace: &str, name: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of `namespace/name` of a typed resource.
    pub fn of<K: kube::Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Self {
        Self::new(&K::api_version(&()), &K::plural(&()), namespace, name)
    }
}

/// A resource type the fake serves. Requests for any other answer 404, as a real server
/// without the CRD does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    /// `v1` or `{group}/{version}`.
    pub api_version: String,
    /// `Pod`; lists answer `{kind}List`.
    pub kind: String,
    /// `pods`: the path segment.
    pub plural: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the kind has a `/status` subresource: then writes to the main resource leave
    /// `.status` alone, and writes to `/status` change nothing else.
    pub status_subresource: bool,
}

impl ResourceType {
    /// The type of `K` (its api version, kind, plural and scope), without a status
    /// subresource.
    pub fn of<K>() -> Self
    where
        K: kube::Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        Self {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
            namespaced: TypeId::of::<K::Scope>() != TypeId::of::<k8s_openapi::ClusterResourceScope>(),
            status_subresource: false,
        }
    }

    /// The same, with a `/status` subresource.
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// What a new [`FakeApi`] serves: the kinds a `PostgresCluster` owns or reads, and a few
    /// neighbours. Those with a `/status` subresource on a real server have one here.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::of::<PostgresCluster>().with_status(),
            Self::of::<ConfigMap>(),
            Self::of::<Secret>(),
            Self::of::<ServiceAccount>(),
            Self::of::<Service>().with_status(),
            Self::of::<Endpoints>(),
            Self::of::<Event>(),
            Self::of::<k8s_openapi::api::events::v1::Event>(),
            Self::of::<Pod>().with_status(),
            Self::of::<PersistentVolumeClaim>().with_status(),
            Self::of::<PersistentVolume>().with_status(),
            Self::of::<Namespace>().with_status(),
            Self::of::<Node>().with_status(),
            Self::of::<Lease>(),
            Self::of::<EndpointSlice>(),
            Self::of::<PodDisruptionBudget>().with_status(),
            Self::of::<Role>(),
            Self::of::<RoleBinding>(),
            Self::of::<ClusterRole>(),
            Self::of::<ClusterRoleBinding>(),
            Self::of::<StatefulSet>().with_status(),
            Self::of::<Deployment>().with_status(),
        ]
    }
}

/// The fake API server. Cheap to clone: clones share the same objects, log and faults, so a
/// test keeps one to control and inspect while a `kube::Client` owns another.
#[derive(Clone)]
pub struct FakeApi {
    shared: Arc<Mutex<Shared>>,
}

impl fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("FakeApi")
            .field("resource_version", &shared.store.resource_version())
            .field("requests", &shared.log.len())
            .field("faults", &shared.faults.len())
            .finish()
    }
}

#[derive(Debug)]
struct Shared {
    store: Store,
    log: Vec<RecordedRequest>,
    faults: Vec<Fault>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApi {
    /// An empty server for [`ResourceType::defaults`], its clock at [`DEFAULT_NOW`].
    pub fn new() -> Self {
        let now = DEFAULT_NOW.parse().expect("DEFAULT_NOW is an RFC 3339 time");
        let store = Store::new(ResourceType::defaults(), now);
        Self { shared: Arc::new(Mutex::new(Shared { store, log: Vec::new(), faults: Vec::new() })) }
    }

    /// A `kube::Client` whose requests this fake answers; its default namespace is `default`.
    /// Needs a Tokio runtime (the client's buffer spawns a task).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Serves `resource` too (or serves it differently: replaces the registration with the
    /// same api version and plural).
    pub fn register(&self, resource: ResourceType) {
        self.lock().store.register(resource);
    }

    /// Sets the clock that `creationTimestamp` and `deletionTimestamp` read.
    pub fn set_now(&self, now: Timestamp) {
        self.lock().store.set_now(now);
    }

    /// The last `resourceVersion` handed out (every write that changes something takes the
    /// next one; lists report it).
    pub fn resource_version(&self) -> u64 {
        self.lock().store.resource_version()
    }

    // ---- objects, as another writer: nothing here is logged --------------------------------

    /// Stores `object` as another writer would create it (or replaces it if it exists),
    /// without going through the log. Its `apiVersion` and `kind` say its resource; the
    /// server's fields it lacks are set (`uid`, `creationTimestamp`, `generation`) and it gets
    /// a new `resourceVersion`; those it has are kept (a test can give a cluster a known
    /// `uid`). Returns the stored object.
    ///
    /// # Panics
    /// When the object cannot be serialised, lacks `apiVersion`, `kind`, `metadata.name` (or
    /// `metadata.namespace`, for a namespaced kind), or its kind is not registered: a mistake
    /// in the test.
    pub fn insert<K: Serialize>(&self, object: &K) -> Value {
        let object = serde_json::to_value(object).expect("insert: the object serialises to JSON");
        let field = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
        let (api_version, kind, name) = (field("/apiVersion"), field("/kind"), field("/metadata/name"));
        let mut shared = self.lock();
        let resource =
            shared.store.resource_of_kind(&api_version, &kind).cloned().unwrap_or_else(|| {
                panic!("insert: {api_version:?} {kind:?} is not served; FakeApi::register it first")
            });
        let namespace = if resource.namespaced { field("/metadata/namespace") } else { String::new() };
        assert!(!name.is_empty(), "insert: the {kind} has no metadata.name");
        assert!(!resource.namespaced || !namespace.is_empty(), "insert: the {kind} {name:?} has no metadata.namespace");
        let key = ObjectKey { api_version, plural: resource.plural.clone(), namespace, name };
        shared.store.commit(&resource, &key, object, Writer::Test, false).object
    }

    /// The stored object `namespace/name` of `api_version`/`plural` (`namespace` empty for a
    /// cluster-scoped kind), as the API would return it.
    pub fn get(&self, api_version: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjectKey::new(api_version, plural, namespace, name);
        self.lock().store.get(&key).cloned()
    }

    /// The stored object `namespace/name` of type `K`.
    ///
    /// # Panics
    /// When the stored JSON does not deserialise as `K`.
    pub fn get_as<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let key = ObjectKey::of::<K>(namespace, name);
        let object = self.get(&key.api_version, &key.plural, namespace, name)?;
        Some(
            serde_json::from_value(object).unwrap_or_else(|e| panic!("get_as: {key:?} is not a {}: {e}", K::kind(&()))),
        )
    }

    /// Every stored object of `plural`, in every namespace (and api version), by namespace
    /// then name.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        self.lock().store.list_plural(plural).cloned().collect()
    }

    /// Every stored object of type `K`, in every namespace, by namespace then name.
    ///
    /// # Panics
    /// When a stored object does not deserialise as `K`.
    pub fn list_as<K>(&self) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let (api_version, plural) = (K::api_version(&()), K::plural(&()));
        let shared = self.lock();
        shared
            .store
            .list(&api_version, &plural, None)
            .map(|(key, object)| {
                serde_json::from_value(object.clone())
                    .unwrap_or_else(|e| panic!("list_as: {key:?} is not a {}: {e}", K::kind(&())))
            })
            .collect()
    }

    /// Changes a stored object as another writer would (an instance moving the Lease, the
    /// kubelet setting a pod's status, a person editing labels), without going through the
    /// log: `change` may touch anything, `.status` and `metadata.deletionTimestamp`
    /// included. A change bumps `resourceVersion` (and `generation` when it touches more than
    /// `metadata` and `status`); no change, no new version. Returns the stored object, `None`
    /// when there is none. `change` runs without the fake locked: it may call the fake.
    pub fn modify(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let key = ObjectKey::new(api_version, plural, namespace, name);
        let (resource, mut object) = {
            let shared = self.lock();
            (shared.store.resource(api_version, plural)?.clone(), shared.store.get(&key)?.clone())
        };
        change(&mut object);
        Some(self.lock().store.commit(&resource, &key, object, Writer::Test, false).object)
    }

    /// [`FakeApi::modify`] on a typed object.
    ///
    /// # Panics
    /// When the stored JSON does not deserialise as `K`, or `K` does not serialise.
    pub fn modify_as<K>(&self, namespace: &str, name: &str, change: impl FnOnce(&mut K)) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let key = ObjectKey::of::<K>(namespace, name);
        let kind = K::kind(&());
        let stored = self.modify(&key.api_version, &key.plural, namespace, name, |object| {
            let mut typed: K = serde_json::from_value(object.clone())
                .unwrap_or_else(|e| panic!("modify_as: {key:?} is not a {kind}: {e}"));
            change(&mut typed);
            *object = serde_json::to_value(&typed).expect("modify_as: the object serialises to JSON");
        })?;
        Some(
            serde_json::from_value(stored)
                .unwrap_or_else(|e| panic!("modify_as: the stored object is not a {kind}: {e}")),
        )
    }

    /// Removes a stored object at once (finalizers or not), without going through the log.
    /// Returns it, `None` when there was none.
    pub fn remove(&self, api_version: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjectKey::new(api_version, plural, namespace, name);
        self.lock().store.remove(&key)
    }

    // ---- faults ----------------------------------------------------------------------------

    /// Scripts a failure (see [`Fault`]). Faults are matched in the order they were injected.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push(fault);
        }
    }

    /// The next `times` requests with `method` on `plural` answer `code`.
    pub fn fail_next(&self, method: Method, plural: &str, times: usize, code: u16) {
        self.inject(Fault::new(method, plural, code).times(times));
    }

    /// The faults that have not fired yet (with what is left of their `times`).
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.lock().faults.clone()
    }

    // ---- the request log -------------------------------------------------------------------

    /// Every request received since the start (or [`FakeApi::clear_log`]), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().log.clone()
    }

    /// The requests that are not reads ([`RecordedRequest::is_write`]): sent, whether they
    /// changed anything or not, and whether they succeeded or not.
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.lock().log.iter().filter(|r| r.is_write()).cloned().collect()
    }

    /// The requests on resource `plural`.
    pub fn requests_to(&self, plural: &str) -> Vec<RecordedRequest> {
        self.lock().log.iter().filter(|r| r.plural.as_deref() == Some(plural)).cloned().collect()
    }

    /// The writes on resource `plural`.
    pub fn writes_to(&self, plural: &str) -> Vec<RecordedRequest> {
        self.lock().log.iter().filter(|r| r.is_write() && r.plural.as_deref() == Some(plural)).cloned().collect()
    }

    /// Forgets the requests received so far.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A test that panicked while holding the lock has failed already; its data is intact
        // enough to report from.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shared {
    /// Answers one request and logs it: `(code, body)`.
    fn serve(&mut self, parts: &http::request::Parts, body: Result<Vec<u8>, String>) -> (u16, Value) {
        let header = |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
        let content_type = header(CONTENT_TYPE);
        let route = Route::parse(parts.uri.path());
        let query = decode_query(parts.uri.query().unwrap_or_default());
        let body = body.and_then(|bytes| parse_body(&bytes, content_type.as_deref()));
        let recorded_body = match &body {
            Ok(parsed) => parsed.clone(),
            Err(text) => Some(Value::String(text.clone())),
        };
        let outcome = match (&route, &body) {
            (None, _) => Err(ApiError::new(404, "the server could not find the requested resource")),
            (_, Err(_)) => Err(ApiError::new(400, "the request body is not JSON (nor YAML, for an apply)")),
            (Some(route), Ok(body)) => match self.fault(&parts.method, route) {
                Some(injected) => Err(injected),
                None => {
                    let accept = header(ACCEPT);
                    let incoming = Incoming {
                        method: &parts.method,
                        route,
                        query: &query,
                        content_type: content_type.as_deref(),
                        accept: accept.as_deref(),
                        body: body.as_ref(),
                    };
                    routes::handle(&mut self.store, &incoming)
                }
            },
        };
        let (code, answer, changed) = match outcome {
            Ok(reply) => (reply.code, reply.body, reply.changed),
            Err(error) => (error.code, error.status(), false),
        };
        self.log.push(RecordedRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query,
            content_type,
            body: recorded_body,
            plural: route.as_ref().map(|r| r.plural.clone()),
            namespace: route.as_ref().and_then(|r| r.namespace.clone()),
            name: route.as_ref().and_then(|r| r.name.clone()),
            subresource: route.as_ref().and_then(|r| r.subresource.clone()),
            status: code,
            changed,
        });
        (code, answer)
    }

    /// The error of the first pending fault matching the request, which it uses up.
    fn fault(&mut self, method: &Method, route: &Route) -> Option<ApiError> {
        let fault = self.faults.iter_mut().find(|f| f.matches(method, route))?;
        fault.times -= 1;
        let message = fault
            .message
            .clone()
            .unwrap_or_else(|| format!("injected fault: {} {} answers {}", fault.method, fault.plural, fault.code));
        let error = ApiError::new(fault.code, message);
        self.faults.retain(|f| f.times > 0);
        Some(error)
    }
}

/// The body as JSON (`None` when empty). An apply may be YAML (kube sends JSON, which is YAML
/// too). `Err` carries the text, for the log.
fn parse_body(bytes: &[u8], content_type: Option<&str>) -> Result<Option<Value>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = || String::from_utf8_lossy(bytes).into_owned();
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(Some(value)),
        Err(_) if content_type.is_some_and(|c| c.starts_with("application/apply-patch+yaml")) => {
            serde_yaml::from_slice(bytes).map(Some).map_err(|_| text())
        }
        Err(_) => Err(text()),
    }
}

impl tower::Service<Request<Body>> for FakeApi {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let api = self.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // kube's request bodies are in memory: this completes at once.
            let body = body.collect_bytes().await.map(|b| b.to_vec()).map_err(|e| format!("unreadable body: {e}"));
            let (code, answer) = api.lock().serve(&parts, body);
            let mut response = Response::new(Body::from(serde_json::to_vec(&answer).unwrap_or_default()));
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        })
    }
}
