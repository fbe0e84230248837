//! pgwarden's operator: turns a `PostgresCluster` into pods, PVCs, services, secrets and RBAC,
//! and reports status (DESIGN §6). High availability never depends on it: the instance
//! managers elect their primary themselves.
//!
//! This crate is a skeleton until its own issue: it depends on `pgwarden-contract`, the
//! contract between the two binaries (not on the instance manager itself), so that contract
//! already compiles against its second user.

use pgwarden_contract::InstanceConfig;

/// The configuration file the operator will render into each cluster's ConfigMap, as YAML.
pub fn render_instance_config(config: &InstanceConfig) -> Result<String, serde_yaml_error::Error> {
    serde_yaml_error::to_string(config)
}

/// Re-export of the YAML serialiser used for rendered ConfigMaps.
pub use serde_yaml as serde_yaml_error;
