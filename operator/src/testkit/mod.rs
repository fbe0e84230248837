//! Test infrastructure of the operator (compiled for tests only).
//!
//! [`FakeApi`] is an in-memory Kubernetes API server behind a `tower::Service`: a real
//! `kube::Client` ([`FakeApi::client`]) talks to it, so the reconcile runs its real requests
//! against scripted API behaviour, without a cluster. The test keeps a clone of the
//! [`FakeApi`] to seed objects, act as another writer, inject faults and read the request log.
//!
//! ```ignore
//! let api = FakeApi::new();
//! api.insert(&cluster);                                   // seeded, not logged
//! reconcile(cluster.clone(), ctx(api.client())).await?;
//! api.clear_log();
//! reconcile(cluster, ctx(api.client())).await?;
//! assert!(api.writes().is_empty(), "the second reconcile wrote: {:#?}", api.writes());
//! ```
//!
//! # Layout
//! [`FakeApi`] (`fake_api`) is the handle: the `tower::Service`, the test's controls and the
//! log. `routes` parses paths and answers each verb over the `store` (objects, resource types
//! and the server-set fields); `merge` holds merge patch and the apply approximation,
//! `selector` the label and field selectors; [`Fault`] and [`RecordedRequest`] are the
//! scripted failures and the log's entries.
//!
//! # What it emulates
//! - Paths `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/status]]` and the same under
//!   `/apis/{group}/{version}`; a list without a namespace spans all of them. Only the
//!   registered [`ResourceType`]s are served ([`ResourceType::defaults`]: the kinds a cluster
//!   owns, `PostgresCluster`, Leases...); anything else answers 404, as a server without the
//!   CRD would.
//! - Verbs: get; list with `labelSelector` (the full grammar: `k=v`, `k!=v`, `k`, `!k`,
//!   `k in (..)`, `k notin (..)`) and `fieldSelector` (`path=value`, `path!=value` on any
//!   dotted path), and metadata-only gets and lists (`as=PartialObjectMetadata[List]`);
//!   create (`generateName` too); replace; merge patch (`application/merge-patch+json`, and
//!   `application/strategic-merge-patch+json` treated as one); server-side apply
//!   (`application/apply-patch+yaml`, see below); delete, delete of a collection, and
//!   `pods/{name}/eviction` (which deletes the pod).
//! - The `/status` subresource of the kinds that have one: writes to it change only
//!   `.status`, writes to the main resource leave `.status` alone (and a create drops it).
//! - Server-set fields: `metadata.uid` (`uid-1`, `uid-2`...), `resourceVersion` (one global
//!   counter), `creationTimestamp` (a settable clock, [`FakeApi::set_now`]), `generation` (1,
//!   then +1 when anything but `metadata` and `status` changes: the custom-resource rule). A
//!   write whose result equals the stored object stores nothing and keeps the
//!   `resourceVersion`, as the real server does (a no-op apply or patch is not a change).
//! - Optimistic concurrency: a `metadata.resourceVersion` (or `uid`) in a replace, patch or
//!   apply, or in a delete's preconditions, must be the stored one, or 409 `Conflict`. A
//!   create of an existing name is 409 `AlreadyExists`; a missing object is 404 `NotFound`.
//!   Every error body is a `Status`, which kube turns into `kube::Error::Api` with its code.
//! - Finalizers: deleting an object that has some sets `deletionTimestamp`; it goes when a
//!   write removes the last one.
//! - `dryRun=All`: answered, not stored.
//!
//! # Server-side apply, approximated
//! An apply creates the object when absent (201). When present, the applied object is merged
//! into the stored one: maps merge recursively, lists and scalars from the applied object
//! replace the stored ones; the server's metadata is kept, and so are the labels,
//! annotations and other map entries the applied object does not mention (another writer's
//! `pgwarden.io/role` label survives the operator's apply). What a field manager applied is
//! remembered per object and subresource, and the map entries it applied before and no longer
//! applies are removed, as real server-side apply removes the fields a manager gives up.
//! `fieldManager` is required (422 without it), `force` is recorded and accepted. Limits:
//! - lists are atomic: the real server merges lists with merge keys (`containers` by name,
//!   `ownerReferences` by uid, `finalizers` as a set) item by item across managers; here the
//!   applied list replaces the whole list, items other writers added included;
//! - there are no conflicts between managers: an apply without `force` that the real server
//!   would refuse (409) succeeds; script the 409 with a [`Fault`] to test that path;
//! - a field a manager stops applying is removed even when another writer has written it
//!   since (the real server would have moved its ownership to that writer);
//! - `metadata.managedFields` is not kept, nothing is defaulted (the real server fills a pod
//!   spec's defaults) and no schema is checked (the CRD's CEL rules are tested apart).
//!
//! # What it does not emulate
//! Watches (a `watch=true` request answers 405: the reconcile reads with get and list),
//! JSON patch (`application/json-patch+json` answers 415), pagination (`limit` is ignored and
//! every item is in one page, which the API allows), garbage collection by owner references,
//! conversion between api versions (each version is a separate store), admission (webhooks,
//! quotas, PodDisruptionBudgets on eviction), authorization (script a 403 with a [`Fault`]),
//! and the kubelet and controllers: pods never run, nothing sets a status unless the test does
//! ([`FakeApi::modify`]). A delete that removes the object answers a `Status`, as the real
//! server does for most kinds (for pods and custom resources it answers the object; kube's
//! `Api::delete` accepts both).
//!
//! # The request log
//! Every request is recorded ([`RecordedRequest`]: method, path, decoded query, content type,
//! body as JSON, the resource it named, the code answered and whether it changed a stored
//! object), including failed and faulted ones, exactly once and in order. The test's own
//! [`FakeApi::insert`], [`FakeApi::modify`] and [`FakeApi::remove`] are not requests and are
//! not recorded.

mod fake_api;
mod fault;
mod merge;
mod request_log;
mod routes;
mod selector;
mod store;

pub use fake_api::{DEFAULT_NOW, FakeApi, ObjectKey, ResourceType};
pub use fault::Fault;
pub use request_log::RecordedRequest;

mod fake_api_tests;
