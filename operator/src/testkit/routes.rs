//! The fake API server's routes: a request path parsed into a [`Route`], and one function per
//! verb over the [`Store`]. Every refusal is an [`ApiError`] that becomes a `Status` body, as
//! the real server's errors do, so kube parses it into `kube::Error::Api`.

use http::Method;
use serde_json::{Map, Value, json};

use super::fake_api::{ObjectKey, ResourceType};
use super::merge;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{SERVER_METADATA, Store, Writer, Written, metadata_mut};

/// A request path: `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]` or the same
/// under `/apis/{group}/{version}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    /// `v1` or `{group}/{version}`.
    pub api_version: String,
    /// The API group, empty for the core group.
    pub group: String,
    pub plural: String,
    /// `None`: a cluster-scoped object, or a list across every namespace.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Route {
    /// Parses a path; `None` for anything that is not a resource path.
    pub(super) fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_end_matches('/').strip_prefix('/')?.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(*name), None),
            [plural, name, subresource] => (*plural, Some(*name), Some(*subresource)),
            _ => return None,
        };
        Some(Self {
            api_version: if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
            group: group.to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    /// `plural` or `plural.group`, as the real server names a resource in its messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey::new(&self.api_version, &self.plural, self.namespace.as_deref().unwrap_or_default(), name)
    }

    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }
}

/// A refusal: the HTTP code, the `reason` of the `Status` and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    pub code: u16,
    pub message: String,
    /// When set, overrides the reason [`reason_for`] gives the code (`AlreadyExists`).
    reason: Option<&'static str>,
    /// The `details` of the `Status`: which object.
    details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(code: u16, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reason: None, details: None }
    }

    fn about(mut self, route: &Route, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": route.group, "kind": route.plural}));
        self
    }

    fn not_found(route: &Route, name: &str) -> Self {
        Self::new(404, format!("{} {name:?} not found", route.qualified())).about(route, name)
    }

    fn conflict(route: &Route, name: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            route.qualified()
        );
        Self::new(409, message).about(route, name)
    }

    fn no_resource() -> Self {
        Self::new(404, "the server could not find the requested resource")
    }

    /// The `Status` body the real server sends with this code.
    pub(super) fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason.unwrap_or(reason_for(self.code)), "code": self.code,
        });
        if let (Some(details), Value::Object(map)) = (&self.details, &mut status) {
            map.insert("details".into(), details.clone());
        }
        status
    }
}

/// The `reason` Kubernetes gives an HTTP code (`metav1.StatusReason`).
pub(super) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// A request as the routes see it.
#[derive(Debug)]
pub(super) struct Incoming<'a> {
    pub method: &'a Method,
    pub route: &'a Route,
    pub query: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub body: Option<&'a Value>,
}

impl Incoming<'_> {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
            || self
                .body
                .and_then(|b| b.get("dryRun"))
                .and_then(Value::as_array)
                .is_some_and(|d| d.contains(&json!("All")))
    }

    fn object_body(&self) -> Result<&Value, ApiError> {
        self.body.filter(|b| b.is_object()).ok_or_else(|| ApiError::new(400, "the request needs a JSON object as body"))
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Reply {
    pub code: u16,
    pub body: Value,
    /// Whether the request changed a stored object.
    pub changed: bool,
}

impl Reply {
    fn read(body: Value) -> Self {
        Self { code: 200, body, changed: false }
    }

    fn written(written: Written) -> Self {
        let code = if written.created { 201 } else { 200 };
        Self { code, body: written.object, changed: written.changed }
    }
}

/// Answers one request.
pub(super) fn handle(store: &mut Store, request: &Incoming<'_>) -> Result<Reply, ApiError> {
    let route = request.route;
    if matches!(request.param("watch"), Some("true" | "1")) {
        return Err(ApiError::new(405, "watch is not emulated by the fake API server: read with get and list"));
    }
    let resource = store.resource(&route.api_version, &route.plural).cloned().ok_or_else(ApiError::no_resource)?;
    let misplaced =
        if resource.namespaced { route.name.is_some() && route.namespace.is_none() } else { route.namespace.is_some() };
    let subresource_known = match route.subresource.as_deref() {
        None => true,
        Some("status") => resource.status_subresource,
        Some("eviction") => resource.plural == "pods" && resource.api_version == "v1",
        Some(_) => false,
    };
    if misplaced || !subresource_known {
        return Err(ApiError::no_resource());
    }
    let method = request.method;
    match (route.name.as_deref(), route.subresource.as_deref()) {
        (None, _) if method == Method::GET => list(store, &resource, request),
        (None, _) if method == Method::POST => create(store, &resource, request),
        (None, _) if method == Method::DELETE => delete_collection(store, &resource, request),
        (Some(name), Some("eviction")) if method == Method::POST => evict(store, &resource, request, name),
        (Some(name), None | Some("status")) if method == Method::GET => get(store, request, name),
        (Some(name), None | Some("status")) if method == Method::PUT => replace(store, &resource, request, name),
        (Some(name), None | Some("status")) if method == Method::PATCH => patch(store, &resource, request, name),
        (Some(name), None) if method == Method::DELETE => delete(store, &resource, request, name),
        _ => Err(ApiError::new(405, format!("{method} is not supported on {}", route.qualified()))),
    }
}

fn get(store: &Store, request: &Incoming<'_>, name: &str) -> Result<Reply, ApiError> {
    let route = request.route;
    let object = store.get(&route.key(name)).ok_or_else(|| ApiError::not_found(route, name))?;
    let metadata_only = request.accept.is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    Ok(Reply::read(if metadata_only { partial_metadata(object) } else { object.clone() }))
}

/// The objects a list (or a delete of a collection) selects: the route's namespace (or all),
/// `labelSelector` and `fieldSelector`.
fn selected<'a>(
    store: &'a Store,
    resource: &'a ResourceType,
    request: &'a Incoming<'_>,
) -> Result<Vec<(&'a ObjectKey, &'a Value)>, ApiError> {
    let labels =
        LabelSelector::parse(request.param("labelSelector").unwrap_or_default()).map_err(|e| ApiError::new(400, e))?;
    let fields =
        FieldSelector::parse(request.param("fieldSelector").unwrap_or_default()).map_err(|e| ApiError::new(400, e))?;
    Ok(store
        .list(&resource.api_version, &resource.plural, request.route.namespace.as_deref())
        .filter(|(_, object)| labels.matches(object) && fields.matches(object))
        .collect())
}

/// A list body, `{kind: <Kind>List, apiVersion, metadata: {resourceVersion}, items}`. Items
/// keep their `kind` and `apiVersion` (custom resources have them on the real server, built-in
/// kinds do not; kube accepts both).
fn list_body(store: &Store, kind: String, api_version: &str, items: Vec<Value>) -> Value {
    let version = store.resource_version().to_string();
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": version}, "items": items})
}

fn list(store: &Store, resource: &ResourceType, request: &Incoming<'_>) -> Result<Reply, ApiError> {
    let objects = selected(store, resource, request)?.into_iter().map(|(_, object)| object);
    let body = if request.accept.is_some_and(|a| a.contains("as=PartialObjectMetadataList")) {
        let items = objects.map(partial_metadata).collect();
        list_body(store, "PartialObjectMetadataList".to_owned(), "meta.k8s.io/v1", items)
    } else {
        list_body(store, format!("{}List", resource.kind), &resource.api_version, objects.cloned().collect())
    };
    Ok(Reply::read(body))
}

fn create(store: &mut Store, resource: &ResourceType, request: &Incoming<'_>) -> Result<Reply, ApiError> {
    let route = request.route;
    if resource.namespaced && route.namespace.is_none() {
        return Err(ApiError::new(
            405,
            format!("create {} in a namespace: /namespaces/{{ns}}/{}", resource.plural, resource.plural),
        ));
    }
    let body = request.object_body()?;
    check_type(resource, body, false)?;
    check_namespace(route, body)?;
    if body.pointer("/metadata/resourceVersion").is_some() {
        return Err(ApiError::new(400, "resourceVersion should not be set on objects to be created"));
    }
    let name = match (body.pointer("/metadata/name").and_then(Value::as_str), body.pointer("/metadata/generateName")) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(Value::String(prefix))) if !prefix.is_empty() => store.generate_name(prefix),
        _ => {
            return Err(ApiError::new(
                422,
                format!(
                    "{} is invalid: metadata.name: Required value: name or generateName is required",
                    resource.kind
                ),
            ));
        }
    };
    let key = route.key(&name);
    if store.get(&key).is_some() {
        let mut error =
            ApiError::new(409, format!("{} {name:?} already exists", route.qualified())).about(route, &name);
        error.reason = Some("AlreadyExists");
        return Err(error);
    }
    let mut object = body.clone();
    let meta = metadata_mut(&mut object);
    for field in SERVER_METADATA {
        meta.remove(field);
    }
    if resource.status_subresource {
        remove_status(&mut object);
    }
    Ok(Reply::written(store.commit(resource, &key, object, Writer::Api, request.dry_run())))
}

fn replace(store: &mut Store, resource: &ResourceType, request: &Incoming<'_>, name: &str) -> Result<Reply, ApiError> {
    let route = request.route;
    let body = request.object_body()?;
    check_type(resource, body, false)?;
    check_namespace(route, body)?;
    check_name(body, name)?;
    let key = route.key(name);
    let old = store.get(&key).ok_or_else(|| ApiError::not_found(route, name))?;
    check_preconditions(route, name, old, body)?;
    let new = if route.is_status() {
        with_status_of(old, body)
    } else if resource.status_subresource {
        with_status_of(body, old)
    } else {
        body.clone()
    };
    Ok(Reply::written(store.commit(resource, &key, new, Writer::Api, request.dry_run())))
}

fn patch(store: &mut Store, resource: &ResourceType, request: &Incoming<'_>, name: &str) -> Result<Reply, ApiError> {
    let content_type = request.content_type.unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    match media_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            merge_patch(store, resource, request, name)
        }
        "application/apply-patch+yaml" => apply(store, resource, request, name),
        "application/json-patch+json" => Err(ApiError::new(
            415,
            "JSON patch (application/json-patch+json) is not emulated by the fake API server: send a merge patch or a server-side apply",
        )),
        _ => Err(ApiError::new(
            415,
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            ),
        )),
    }
}

fn merge_patch(
    store: &mut Store,
    resource: &ResourceType,
    request: &Incoming<'_>,
    name: &str,
) -> Result<Reply, ApiError> {
    let route = request.route;
    let body = request.object_body()?;
    let key = route.key(name);
    let old = store.get(&key).ok_or_else(|| ApiError::not_found(route, name))?;
    check_preconditions(route, name, old, body)?;
    let mut patched = old.clone();
    merge::merge_patch(&mut patched, body);
    let new = if route.is_status() {
        with_status_of(old, &patched)
    } else if resource.status_subresource {
        with_status_of(&patched, old)
    } else {
        patched
    };
    Ok(Reply::written(store.commit(resource, &key, new, Writer::Api, request.dry_run())))
}

/// Server-side apply, approximated: see the module docs of [`super`].
fn apply(store: &mut Store, resource: &ResourceType, request: &Incoming<'_>, name: &str) -> Result<Reply, ApiError> {
    let route = request.route;
    let manager = request.param("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
        ApiError::new(
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        )
    })?;
    let body = request.object_body()?;
    check_type(resource, body, true)?;
    check_namespace(route, body)?;
    check_name(body, name)?;
    let applied = merge::without_nulls(body);
    let config = owned_config(&applied, resource, route.is_status());
    let key = route.key(name);
    let applied_key = (key.clone(), manager.to_owned(), route.is_status());
    let dry_run = request.dry_run();
    let written = match store.get(&key) {
        None if route.is_status() => return Err(ApiError::not_found(route, name)),
        None => {
            if applied.pointer("/metadata/resourceVersion").is_some() {
                return Err(ApiError::conflict(route, name));
            }
            store.commit(resource, &key, config.clone(), Writer::Api, dry_run)
        }
        Some(old) => {
            check_preconditions(route, name, old, &applied)?;
            let mut new = old.clone();
            if let Some(previous) = store.applied(&applied_key) {
                merge::prune(&mut new, previous, &config);
            }
            merge::apply(&mut new, &config);
            store.commit(resource, &key, new, Writer::Api, dry_run)
        }
    };
    if !dry_run && !written.removed {
        store.set_applied(applied_key, config);
    }
    Ok(Reply::written(written))
}

fn delete(store: &mut Store, resource: &ResourceType, request: &Incoming<'_>, name: &str) -> Result<Reply, ApiError> {
    let route = request.route;
    let key = route.key(name);
    let old = store.get(&key).ok_or_else(|| ApiError::not_found(route, name))?;
    if let Some(preconditions) = request.body.and_then(|b| b.get("preconditions")) {
        check_preconditions(route, name, old, &json!({"metadata": preconditions}))?;
    }
    let written = store.delete(resource, &key, request.dry_run()).ok_or_else(|| ApiError::not_found(route, name))?;
    Ok(deleted(route, written))
}

/// A removed object answers a `Status` (as the real server does for most kinds); one kept by
/// its finalizers answers the object with its `deletionTimestamp`.
fn deleted(route: &Route, written: Written) -> Reply {
    if !written.removed {
        return Reply { code: 200, body: written.object, changed: written.changed };
    }
    let name = written.object.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let uid = written.object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": route.group, "kind": route.plural, "uid": uid},
    });
    Reply { code: 200, body, changed: written.changed }
}

fn delete_collection(store: &mut Store, resource: &ResourceType, request: &Incoming<'_>) -> Result<Reply, ApiError> {
    let keys: Vec<ObjectKey> = selected(store, resource, request)?.into_iter().map(|(key, _)| key.clone()).collect();
    let dry_run = request.dry_run();
    let items: Vec<Value> =
        keys.iter().filter_map(|key| store.delete(resource, key, dry_run)).map(|w| w.object).collect();
    let changed = !items.is_empty() && !dry_run;
    Ok(Reply {
        code: 200,
        body: list_body(store, format!("{}List", resource.kind), &resource.api_version, items),
        changed,
    })
}

/// `pods/{name}/eviction`: deletes the pod. PodDisruptionBudgets are not consulted; script a
/// 429 with a [`super::Fault`] to test a refused eviction.
fn evict(store: &mut Store, resource: &ResourceType, request: &Incoming<'_>, name: &str) -> Result<Reply, ApiError> {
    let route = request.route;
    let key = route.key(name);
    let written = store.delete(resource, &key, request.dry_run()).ok_or_else(|| ApiError::not_found(route, name))?;
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(Reply { code: 201, body, changed: written.changed })
}

/// The part of an applied configuration a manager owns: for `/status` only `status`; for the
/// main resource everything but the identity, the server's fields and (when the kind has a
/// status subresource) `status`.
fn owned_config(applied: &Value, resource: &ResourceType, status: bool) -> Value {
    if status {
        return match applied.get("status") {
            Some(s) => json!({"status": s}),
            None => json!({}),
        };
    }
    let mut config = applied.clone();
    if let Value::Object(map) = &mut config {
        map.remove("apiVersion");
        map.remove("kind");
        if resource.status_subresource {
            map.remove("status");
        }
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for field in SERVER_METADATA.iter().chain(&["name", "namespace", "generateName"]) {
                meta.remove(*field);
            }
        }
    }
    config
}

/// `base` with the `status` of `from` (or none if `from` has none).
fn with_status_of(base: &Value, from: &Value) -> Value {
    let mut object = base.clone();
    match (from.get("status"), &mut object) {
        (Some(status), Value::Object(map)) => {
            map.insert("status".into(), status.clone());
        }
        (None, _) => remove_status(&mut object),
        _ => {}
    }
    object
}

fn remove_status(object: &mut Value) {
    if let Value::Object(map) = object {
        map.remove("status");
    }
}

/// What `as=PartialObjectMetadata` asks for: the metadata alone.
fn partial_metadata(object: &Value) -> Value {
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new()));
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
}

/// `apiVersion` and `kind`, when given (server-side apply requires them), are the route's.
fn check_type(resource: &ResourceType, body: &Value, required: bool) -> Result<(), ApiError> {
    for (field, expected) in [("apiVersion", &resource.api_version), ("kind", &resource.kind)] {
        match body.get(field).and_then(Value::as_str) {
            Some(given) if given != expected => {
                return Err(ApiError::new(
                    400,
                    format!("the {field} of the object ({given}) does not match the request ({expected})"),
                ));
            }
            None if required => {
                return Err(ApiError::new(400, format!("the object has no {field}: server-side apply requires it")));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_namespace(route: &Route, body: &Value) -> Result<(), ApiError> {
    match (body.pointer("/metadata/namespace").and_then(Value::as_str), route.namespace.as_deref()) {
        (Some(given), Some(path)) if !given.is_empty() && given != path => Err(ApiError::new(
            400,
            format!(
                "the namespace of the provided object ({given}) does not match the namespace sent on the request ({path})"
            ),
        )),
        _ => Ok(()),
    }
}

fn check_name(body: &Value, name: &str) -> Result<(), ApiError> {
    match body.pointer("/metadata/name").and_then(Value::as_str) {
        Some(given) if given != name => Err(ApiError::new(
            400,
            format!("the name of the object ({given}) does not match the name on the URL ({name})"),
        )),
        _ => Ok(()),
    }
}

/// Optimistic concurrency: a `metadata.resourceVersion` (or `uid`) in the request must be the
/// stored one.
fn check_preconditions(route: &Route, name: &str, stored: &Value, request: &Value) -> Result<(), ApiError> {
    for field in ["resourceVersion", "uid"] {
        let pointer = format!("/metadata/{field}");
        if let Some(given) = request.pointer(&pointer).and_then(Value::as_str)
            && Some(given) != stored.pointer(&pointer).and_then(Value::as_str)
        {
            return Err(ApiError::conflict(route, name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_routes() {
        let route = |p: &str| Route::parse(p).map(|r| (r.api_version, r.plural, r.namespace, r.name, r.subresource));
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(route("/api/v1/namespaces/db/pods"), Some(("v1".into(), "pods".into(), s("db"), None, None)));
        assert_eq!(
            route("/apis/pgwarden.io/v1alpha1/namespaces/db/postgresclusters/pg/status"),
            Some(("pgwarden.io/v1alpha1".into(), "postgresclusters".into(), s("db"), s("pg"), s("status")))
        );
        assert_eq!(route("/api/v1/pods"), Some(("v1".into(), "pods".into(), None, None, None)));
        assert_eq!(route("/api/v1/namespaces/db"), Some(("v1".into(), "namespaces".into(), None, s("db"), None)));
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/leases"),
            Some(("coordination.k8s.io/v1".into(), "leases".into(), None, None, None))
        );
        for bad in
            ["/", "/api", "/api/v1", "/version", "/api/v1/namespaces/db/pods/a/b/c", "/api/v1//pods", "api/v1/pods"]
        {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
    }
}
