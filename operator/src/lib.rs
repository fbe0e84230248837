//! pgwarden's operator: turns a `PostgresCluster` into pods, PVCs, Services, Secrets and RBAC,
//! and reports status (docs/architecture.md §13). High availability never depends on it: the
//! instance managers elect their primary themselves, write the `-rw` EndpointSlice and their
//! role labels, and the operator never writes any of those.
//!
//! It depends on `pgwarden-contract`, the contract between the two binaries, not on the
//! instance manager: the `InstanceConfig` it renders into each cluster's ConfigMap and the
//! `/status` document it reads.
//!
//! - [`crd`]: the `PostgresCluster` and `PostgresBackup` resources, their schemas and CEL rules.
//! - [`names`]: the names and labels of everything a cluster owns.
//! - [`build`]: pure builders, spec → desired objects.
//! - [`generate`]: passwords and certificates (randomness and the clock, kept out of `build`).
//! - [`reconcile`]: one pass over a cluster; [`backup_reconcile`]: one pass over a backup.
//! - [`instances`]: the instances' HTTPS API, as the operator calls it.
//! - [`controller`]: the runtime — leader election, the two controllers, `/metrics`.

pub mod backup_reconcile;
pub mod build;
pub mod controller;
pub mod crd;
pub mod generate;
pub mod instances;
pub mod logging;
pub mod names;
pub mod reconcile;
#[cfg(test)]
pub mod testkit;
