//! pgwarden's operator: turns a `PostgresCluster` into pods, PVCs, services, secrets and RBAC,
//! and reports status (docs/architecture.md §1). High availability never depends on it: the instance
//! managers elect their primary themselves.
//!
//! This crate is a skeleton until its own issue. It depends on `pgwarden-contract`, the
//! contract between the two binaries (not on the instance manager itself): the
//! `InstanceConfig` it will render into each cluster's ConfigMap and the `/status` document it
//! will read.
