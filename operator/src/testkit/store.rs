//! The fake API server's storage: the objects, the resource types it serves, the fields the
//! server sets (`uid`, `resourceVersion`, `creationTimestamp`, `generation`,
//! `deletionTimestamp`) and the one rule every write goes through ([`Store::commit`]): an
//! object equal to the stored one is not written (no new `resourceVersion`, as etcd's
//! `GuaranteedUpdate` skips an unchanged object).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::fake_api::{ObjectKey, ResourceType};

/// The metadata only the server writes: kept from the stored object on every API write.
pub(super) const SERVER_METADATA: [&str; 7] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

/// Who writes: a client of the API (server-set fields are the server's) or the test itself
/// (what it sets is kept: a test may make a pod terminating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Writer {
    /// A request through the HTTP service.
    Api,
    /// [`super::FakeApi::insert`] and [`super::FakeApi::modify`].
    Test,
}

/// Which part of an object a server-side apply manager owns: the main resource or `/status`
/// (as `managedFields` entries record their subresource).
pub(super) type AppliedKey = (ObjectKey, String, bool);

/// What a write did.
#[derive(Debug, Clone)]
pub(super) struct Written {
    /// The object as stored (or as it was when the write removed it).
    pub object: Value,
    /// Whether anything changed (a new `resourceVersion` was assigned); never on a dry run.
    pub changed: bool,
    /// Whether the object did not exist before.
    pub created: bool,
    /// Whether the write removed it (its last finalizer went while it was terminating).
    pub removed: bool,
}

/// Objects and counters. Not thread-safe on its own: [`super::FakeApi`] holds it in a mutex.
#[derive(Debug)]
pub(super) struct Store {
    resources: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    /// What each manager last applied, per object and subresource: the fields it owns.
    applied: BTreeMap<AppliedKey, Value>,
    resource_version: u64,
    uids: u64,
    generated_names: u64,
    now: Timestamp,
}

impl Store {
    /// An empty store serving `resources`, whose clock reads `now`.
    pub(super) fn new(resources: Vec<ResourceType>, now: Timestamp) -> Self {
        Self {
            resources,
            objects: BTreeMap::new(),
            applied: BTreeMap::new(),
            resource_version: 0,
            uids: 0,
            generated_names: 0,
            now,
        }
    }

    /// Serves `resource` too (replacing a registration of the same api version and plural).
    pub(super) fn register(&mut self, resource: ResourceType) {
        self.resources.retain(|r| !(r.api_version == resource.api_version && r.plural == resource.plural));
        self.resources.push(resource);
    }

    /// The resource type at `api_version`/`plural`.
    pub(super) fn resource(&self, api_version: &str, plural: &str) -> Option<&ResourceType> {
        self.resources.iter().find(|r| r.api_version == api_version && r.plural == plural)
    }

    /// The resource type of objects of `kind` at `api_version`.
    pub(super) fn resource_of_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        self.resources.iter().find(|r| r.api_version == api_version && r.kind == kind)
    }

    /// The last `resourceVersion` handed out.
    pub(super) fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Sets the clock `creationTimestamp` and `deletionTimestamp` read.
    pub(super) fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// A name for `generateName`: the prefix and a counter (the real server adds 5 random
    /// characters; a counter keeps tests deterministic).
    pub(super) fn generate_name(&mut self, prefix: &str) -> String {
        self.generated_names += 1;
        format!("{prefix}{:05}", self.generated_names)
    }

    pub(super) fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `api_version`/`plural`, in `namespace` or in all of them, by namespace then
    /// name (the real server's order).
    pub(super) fn list<'a>(
        &'a self,
        api_version: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| {
            k.api_version == api_version && k.plural == plural && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }

    /// Objects of `plural` in every api version and namespace.
    pub(super) fn list_plural<'a>(&'a self, plural: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |(k, _)| k.plural == plural).map(|(_, v)| v)
    }

    /// What `manager` last applied to `key` (the main resource, or `/status` when `status`).
    pub(super) fn applied(&self, key: &AppliedKey) -> Option<&Value> {
        self.applied.get(key)
    }

    /// Records what `manager` applied.
    pub(super) fn set_applied(&mut self, key: AppliedKey, config: Value) {
        self.applied.insert(key, config);
    }

    /// Writes `new` at `key` (of type `resource`): sets its identity (`apiVersion`, `kind`,
    /// name, namespace) and the server's fields, and stores it unless it equals what is stored
    /// or `dry_run`. A terminating object that loses its last finalizer is removed.
    pub(super) fn commit(
        &mut self,
        resource: &ResourceType,
        key: &ObjectKey,
        mut new: Value,
        writer: Writer,
        dry_run: bool,
    ) -> Written {
        set_identity(&mut new, resource, key);
        let next_version = (self.resource_version + 1).to_string();
        let Some(old) = self.objects.get(key) else {
            let uid = format!("uid-{}", self.uids + 1);
            let now = self.now_text();
            let meta = metadata_mut(&mut new);
            meta.insert("resourceVersion".into(), json!(next_version));
            meta.entry("uid").or_insert(json!(uid));
            meta.entry("creationTimestamp").or_insert(json!(now));
            meta.entry("generation").or_insert(json!(1));
            if !dry_run {
                self.resource_version += 1;
                self.uids += 1;
                self.objects.insert(key.clone(), new.clone());
            }
            return Written { object: new, changed: !dry_run, created: true, removed: false };
        };
        let old_meta = old.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
        let meta = metadata_mut(&mut new);
        for field in SERVER_METADATA {
            let keep_own = writer == Writer::Test && meta.contains_key(field) && field != "resourceVersion";
            match old_meta.get(field) {
                _ if keep_own => {}
                Some(value) => {
                    meta.insert(field.into(), value.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
        if new == *old {
            return Written { object: new, changed: false, created: false, removed: false };
        }
        let generation = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
        let bump = i64::from(without_meta_and_status(old) != without_meta_and_status(&new));
        let meta = metadata_mut(&mut new);
        if writer == Writer::Api || meta.get("generation") == old_meta.get("generation") {
            meta.insert("generation".into(), json!(generation + bump));
        }
        meta.insert("resourceVersion".into(), json!(next_version));
        let finalized = meta.contains_key("deletionTimestamp")
            && meta.get("finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty);
        if !dry_run {
            self.resource_version += 1;
            if finalized {
                self.remove(key);
            } else {
                self.objects.insert(key.clone(), new.clone());
            }
        }
        Written { object: new, changed: !dry_run, created: false, removed: finalized }
    }

    /// Deletes `key`: an object with finalizers only gets a `deletionTimestamp` (once); any
    /// other is removed. `None` when absent.
    pub(super) fn delete(&mut self, resource: &ResourceType, key: &ObjectKey, dry_run: bool) -> Option<Written> {
        let old = self.objects.get(key)?.clone();
        let has_finalizers =
            old.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if !has_finalizers {
            if !dry_run {
                self.resource_version += 1;
                self.remove(key);
            }
            return Some(Written { object: old, changed: !dry_run, created: false, removed: true });
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Some(Written { object: old, changed: false, created: false, removed: false });
        }
        let mut terminating = old;
        let now = self.now_text();
        let meta = metadata_mut(&mut terminating);
        meta.insert("deletionTimestamp".into(), json!(now));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        Some(self.commit(resource, key, terminating, Writer::Test, dry_run))
    }

    /// Removes `key` and what its managers applied.
    pub(super) fn remove(&mut self, key: &ObjectKey) -> Option<Value> {
        self.applied.retain(|(k, _, _), _| k != key);
        self.objects.remove(key)
    }

    fn now_text(&self) -> String {
        // Kubernetes writes these at second precision.
        self.now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

/// `object.metadata` as a map, made one if it is missing or not a map.
pub(super) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let Value::Object(map) = object else { unreachable!("made a map above") };
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Value::Object(meta) = meta else { unreachable!("made a map above") };
    meta
}

/// Puts the identity the path gives (`apiVersion`, `kind`, name, namespace) on `object`.
fn set_identity(object: &mut Value, resource: &ResourceType, key: &ObjectKey) {
    let meta = metadata_mut(object);
    meta.insert("name".into(), json!(key.name));
    if resource.namespaced {
        meta.insert("namespace".into(), json!(key.namespace));
    } else {
        meta.remove("namespace");
    }
    if let Value::Object(map) = object {
        map.insert("apiVersion".into(), json!(resource.api_version));
        map.insert("kind".into(), json!(resource.kind));
    }
}

/// What `generation` tracks: everything but `metadata` and `status` (the rule for custom
/// resources; for `PostgresCluster`, that is `spec`).
fn without_meta_and_status(object: &Value) -> Value {
    let mut object = object.clone();
    if let Value::Object(map) = &mut object {
        map.remove("metadata");
        map.remove("status");
    }
    object
}
