//! The kube-runtime [`Controller`] on `PostgresCluster`, wrapped around
//! [`crate::reconcile::reconcile`]: which objects it watches, how each reconcile is measured,
//! and how failures are retried.
//!
//! It watches the clusters (in one namespace or all) and the objects they own, so that a
//! deleted Pod or an edited Service brings its cluster back to a reconcile. The owned kinds
//! are watched with the label selector `pgwarden.io/cluster` (existence) and as metadata only:
//! the operator neither lists every Secret of the Kubernetes cluster nor keeps their data.
//!
//! After each reconcile the cluster's failure count ([`ErrorBackoff`]) and the phase metric
//! are kept to the clusters that still exist: a deleted cluster leaves neither behind.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use tokio::time::Instant;

use super::backoff::{ClusterKey, ErrorBackoff};
use super::metrics::Metrics;
use crate::crd::PostgresCluster;
use crate::names::CLUSTER_LABEL;
use crate::reconcile::drain::Cordoned;
use crate::reconcile::{self, Context, Observer, ReconcileError};

/// Reconciles running at once, across clusters (one cluster is never reconciled twice at
/// once): bounds the load a burst of changes puts on the API server.
const CONCURRENCY: u16 = 8;

/// Changes to a cluster closer together than this are reconciled once: the instances update
/// their pods' labels and status in bursts during a failover, and a first reconcile's own
/// creates come back as events. Short, because it is also the delay before a new cluster's
/// first reconcile (a pass of an unchanged cluster costs ten reads and no write).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What every reconcile of the runtime shares: the reconcile's own [`Context`], the metrics and
/// the failure counts.
pub struct Reconciler {
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    backoff: ErrorBackoff,
}

/// One item of the controller's output stream.
pub type Outcome = Result<(ObjectRef<PostgresCluster>, Action), controller::Error<ReconcileError, watcher::Error>>;

impl Reconciler {
    /// A reconciler calling the API with `client`, reporting to `metrics`.
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, cordoned: Cordoned) -> Self {
        let observer: Arc<dyn Observer> = metrics.clone();
        let ctx = Context { cordoned, ..Context::new(client, observer) };
        Self { ctx: Arc::new(ctx), metrics, backoff: ErrorBackoff::default() }
    }

    /// Runs `reconcile` on `cluster`, measuring it.
    pub async fn reconcile(cluster: Arc<PostgresCluster>, this: Arc<Self>) -> Result<Action, ReconcileError> {
        let key = key(&cluster);
        let started = Instant::now();
        let result = reconcile::reconcile(cluster, this.ctx.clone()).await;
        this.metrics.reconciled(started.elapsed(), result.as_ref().err().map(ReconcileError::kind));
        // A failure is counted by the error policy, which decides the retry.
        if result.is_ok() {
            this.backoff.succeeded(&key);
        }
        result
    }

    /// The error policy: log the failure with the cluster, retry after the cluster's backoff.
    pub fn error_policy(cluster: Arc<PostgresCluster>, error: &ReconcileError, this: Arc<Self>) -> Action {
        let key = key(&cluster);
        let (failures, retry_in) = this.backoff.failed(&key);
        tracing::warn!(namespace = %key.0, cluster = %key.1, kind = error.kind(), error = %error, failures,
            retry_in_seconds = retry_in.as_secs(), "reconcile failed");
        Action::requeue(retry_in)
    }

    /// Takes note of one item of the controller's stream.
    pub fn after(&self, outcome: &Outcome, store: &Store<PostgresCluster>) {
        match outcome {
            Ok((object, action)) => tracing::debug!(cluster = %object, ?action, "reconciled"),
            // Logged and counted by the error policy.
            Err(controller::Error::ReconcilerFailed(..)) => {}
            // A reconcile was due for a cluster deleted since: `forget` below.
            Err(controller::Error::ObjectNotFound(object)) => tracing::debug!(cluster = %object, "cluster deleted"),
            Err(controller::Error::QueueError(e)) => {
                tracing::warn!(error = %e, "watch failed; kube-runtime retries it with backoff");
            }
            Err(e @ controller::Error::RunnerError(_)) => tracing::error!(error = %e, "controller runner failed"),
        }
        self.forget_deleted(store);
    }

    /// Drops the failure counts and phases of clusters that are no longer in the store.
    fn forget_deleted(&self, store: &Store<PostgresCluster>) {
        let exists = |(namespace, name): &ClusterKey| store.get(&ObjectRef::new(name).within(namespace)).is_some();
        for cluster in self.metrics.clusters() {
            if !exists(&cluster) {
                self.ctx.observer.forget(&cluster.0, &cluster.1);
            }
        }
        self.backoff.retain(exists);
    }
}

/// The controller: the clusters in `namespace` (all when `None`) and the objects they own, and
/// the Nodes: a node cordoned under an instance (`status.topology`) brings its cluster back
/// at once, and `cordoned` keeps which nodes are (a drain moves the primary away: `drain`).
pub fn controller(client: &kube::Client, namespace: Option<&str>, cordoned: Cordoned) -> Controller<PostgresCluster> {
    let owned = watcher::Config::default().labels(CLUSTER_LABEL);
    let controller = Controller::new(api::<PostgresCluster>(client, namespace), watcher::Config::default());
    let clusters = controller.store();
    let on_node = move |node: Node| -> Vec<ObjectRef<PostgresCluster>> {
        if !cordoned.observe(&node) {
            return Vec::new();
        }
        let name = node.name_any();
        clusters
            .state()
            .iter()
            .filter(|c| c.status.as_ref().is_some_and(|s| s.topology.instances.values().any(|n| *n == name)))
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect()
    };
    controller
        .watches(Api::<Node>::all(client.clone()), watcher::Config::default(), on_node)
        .owns(api::<Pod>(client, namespace), owned.clone())
        .owns(api::<PersistentVolumeClaim>(client, namespace), owned.clone())
        .owns(api::<Service>(client, namespace), owned.clone())
        .owns(api::<Secret>(client, namespace), owned.clone())
        .owns(api::<ConfigMap>(client, namespace), owned.clone())
        .owns(api::<PodDisruptionBudget>(client, namespace), owned.clone())
        .owns(api::<ServiceAccount>(client, namespace), owned.clone())
        .owns(api::<Role>(client, namespace), owned.clone())
        .owns(api::<RoleBinding>(client, namespace), owned)
        .with_config(controller::Config::default().concurrency(CONCURRENCY).debounce(DEBOUNCE))
}

/// An API on `K` in `namespace`, or in every namespace.
pub(super) fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn key(cluster: &PostgresCluster) -> ClusterKey {
    (cluster.namespace().unwrap_or_default(), cluster.name_any())
}
