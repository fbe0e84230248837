//! Opening what the HA loop works with, from the configuration: the lease store (file or
//! Kubernetes `Lease`, wrapped in the fault injector in test builds), the routing (the `-rw`
//! EndpointSlice and pod labels on Kubernetes) and the lease timing.

use std::sync::Arc;

use crate::api::LeaseBackend;
use crate::config::Validated;
use crate::lease::{LeaseStore, LeaseTiming};

/// Why the lease store cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration has no `lease` section.
    #[error("no lease is configured (fix: add a lease section, or run without leader election)")]
    NoLease,
    /// A file lease without its path.
    #[error("lease.path is required for the file backend (fix: set lease.path to a file every member shares)")]
    NoPath,
    /// No Kubernetes client could be built (no in-cluster ServiceAccount, no `KUBECONFIG`).
    #[error("cannot reach the Kubernetes API: {0} (fix: run in a pod with a ServiceAccount token, or set KUBECONFIG)")]
    Kubernetes(String),
}

/// Builds the lease store the configuration names.
pub async fn open_store(v: &Validated) -> Result<Arc<dyn LeaseStore>, OpenError> {
    let Some(spec) = &v.config.lease else { return Err(OpenError::NoLease) };
    Ok(match spec.backend {
        LeaseBackend::File => {
            let path = spec.path.clone().ok_or(OpenError::NoPath)?;
            with_faults(crate::lease::FileLeaseStore::new(path), spec)
        }
        LeaseBackend::Kubernetes => {
            let client = kubernetes_client().await?;
            let ns = v.config.namespace.clone().unwrap_or_else(|| "default".into());
            let name = spec.name.clone().unwrap_or_else(|| format!("{}-primary", v.cluster));
            with_faults(crate::lease::KubernetesLeaseStore::new(client, ns, name), spec)
        }
    })
}

/// The Kubernetes client of the lease and routing: in-cluster or `KUBECONFIG`, **without**
/// the client's own retries of 429/503/504 (up to 15, following Retry-After): they would hide
/// throttling from the lease store and spend a whole call deadline on an answer that should
/// fail at once. Every lease and routing call has its own deadline and retry policy.
async fn kubernetes_client() -> Result<kube::Client, OpenError> {
    let mut config = kube::Config::infer().await.map_err(|e| OpenError::Kubernetes(e.to_string()))?;
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| OpenError::Kubernetes(e.to_string()))
}

/// The store, wrapped in a fault injector reading `lease.faultFile` when the test configuration
/// names one (builds with the cargo feature `testkit` only).
#[cfg(feature = "testkit")]
fn with_faults<S: LeaseStore>(store: S, spec: &crate::api::LeaseSpec) -> Arc<dyn LeaseStore> {
    match &spec.fault_file {
        Some(f) => Arc::new(crate::lease::FaultyStore::new(store).with_fault_file(f.clone())),
        None => Arc::new(store),
    }
}

/// A production build injects no faults: its configuration cannot name a fault file.
#[cfg(not(feature = "testkit"))]
fn with_faults<S: LeaseStore>(store: S, _spec: &crate::api::LeaseSpec) -> Arc<dyn LeaseStore> {
    Arc::new(store)
}

/// The routing the configuration implies: the `-rw` EndpointSlice and pod label in Kubernetes
/// (pod IP from `POD_IP`, the downward API), nothing with a file lease.
pub async fn open_routing(v: &Validated) -> Arc<dyn crate::routing::Routing> {
    let kubernetes = v.config.lease.as_ref().is_some_and(|l| l.backend == LeaseBackend::Kubernetes);
    let ip = std::env::var("POD_IP").ok().and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
    match (kubernetes, ip) {
        (true, Some(ip)) => match kubernetes_client().await {
            Ok(client) => Arc::new(crate::routing::KubernetesRouting::new(
                client,
                v.config.namespace.clone().unwrap_or_else(|| "default".into()),
                v.cluster.clone(),
                v.name.clone(),
                ip,
                v.port,
            )),
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the Kubernetes API for routing; the -rw Service will not follow");
                Arc::new(crate::routing::NoRouting)
            }
        },
        (true, None) => {
            tracing::error!("POD_IP is not set: the -rw EndpointSlice cannot be written (set it from status.podIP)");
            Arc::new(crate::routing::NoRouting)
        }
        (false, _) => Arc::new(crate::routing::NoRouting),
    }
}

/// The lease timing the configuration asks for (see `Validated::lease_timing`).
pub fn timing_of(v: &Validated) -> LeaseTiming {
    v.lease_timing()
}
