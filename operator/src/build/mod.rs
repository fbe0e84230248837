//! Pure builders: a `PostgresCluster` in, the objects it should own out. No I/O, no clock, no
//! randomness: the same cluster always builds byte-for-byte the same objects, which is what
//! makes a second reconcile of an unchanged cluster send nothing (the applied hash,
//! [`crate::names::HASH_ANNOTATION`], is equal) and what the golden files under
//! `testdata/golden/` pin down. Generated passwords and certificates come in as
//! [`Generated`], made by the reconcile shell only for Secrets that do not exist yet.
//!
//! One file per kind: [`config`] (the instances' `InstanceConfig`), [`rbac`], [`services`],
//! [`pdb`], [`storage`] (PVCs), [`pod`], [`secrets`] (credentials and TLS).

pub mod config;
pub mod paths;
pub mod pdb;
pub mod pod;
pub mod rbac;
pub mod secrets;
pub mod services;
pub mod storage;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::PostgresCluster;
use crate::names::Names;

pub use secrets::Generated;

/// Why a cluster's objects cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The object lacks what the API server always sets (`name`, `namespace`, `uid`): it was
    /// not read from the API.
    #[error("the PostgresCluster has no metadata.{0}; it must be read from the API server")]
    Metadata(&'static str),
    /// The instances' configuration could not be serialised.
    #[error("cannot render instance.yaml: {0}")]
    Render(String),
}

/// A cluster as the builders see it: its names, its owner reference, its spec.
#[derive(Debug, Clone)]
pub struct Cluster<'a> {
    /// The resource.
    pub resource: &'a PostgresCluster,
    /// Its names.
    pub names: Names,
    owner: OwnerReference,
}

impl<'a> Cluster<'a> {
    /// Checks that the resource came from the API server (it has a name, namespace and uid).
    pub fn new(resource: &'a PostgresCluster) -> Result<Self, BuildError> {
        let name = resource.metadata.name.as_deref().ok_or(BuildError::Metadata("name"))?;
        let ns = resource.metadata.namespace.as_deref().ok_or(BuildError::Metadata("namespace"))?;
        let owner = resource.controller_owner_ref(&()).ok_or(BuildError::Metadata("uid"))?;
        Ok(Self { resource, names: Names::new(name, ns), owner })
    }

    /// The spec.
    pub fn spec(&self) -> &crate::crd::PostgresClusterSpec {
        &self.resource.spec
    }

    /// Metadata of an owned object named `name` with the cluster's labels.
    pub fn meta(&self, name: &str) -> ObjectMeta {
        self.meta_with(name, self.names.labels())
    }

    /// Metadata of an owned object with the given labels.
    pub fn meta_with(&self, name: &str, labels: std::collections::BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.names.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// The image of the instances.
    pub fn image(&self) -> String {
        self.spec().image.clone().unwrap_or_else(|| crate::crd::DEFAULT_IMAGE.to_owned())
    }
}

/// Everything a cluster owns but its Secrets, as it should be.
#[derive(Debug, Clone)]
pub struct Desired {
    /// `<cluster>-config`: `instance.yaml`.
    pub config_map: ConfigMap,
    /// `<cluster>-instance`.
    pub service_account: ServiceAccount,
    /// `<cluster>-instance`: exactly what the instances need.
    pub role: Role,
    /// `<cluster>-instance`.
    pub role_binding: RoleBinding,
    /// `-rw`, `-ro`, `-r` and `-headless`.
    pub services: Vec<Service>,
    /// The primary's and the replicas' budgets (none for a single instance).
    pub pdbs: Vec<PodDisruptionBudget>,
    /// One per instance, `<cluster>-N`, and `<cluster>-N-wal` with `walStorage`.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// One per instance, `<cluster>-N`.
    pub pods: Vec<Pod>,
}

/// Builds every object of `cluster` but its Secrets.
pub fn desired(cluster: &Cluster<'_>) -> Result<Desired, BuildError> {
    let instances = 1..=cluster.spec().instances.max(1);
    Ok(Desired {
        config_map: config::config_map(cluster)?,
        service_account: rbac::service_account(cluster),
        role: rbac::role(cluster),
        role_binding: rbac::role_binding(cluster),
        services: services::services(cluster),
        pdbs: pdb::budgets(cluster),
        pvcs: instances
            .clone()
            .flat_map(|n| std::iter::once(storage::pvc(cluster, n)).chain(storage::wal_pvc(cluster, n)))
            .collect(),
        pods: instances.map(|n| pod::pod(cluster, n)).collect(),
    })
}

/// The Secrets `cluster` needs and does not have yet, from `generated`.
pub fn missing_secrets(cluster: &Cluster<'_>, existing: &[String], generated: &Generated) -> Vec<Secret> {
    secrets::all(cluster, generated)
        .into_iter()
        .filter(|s| s.metadata.name.as_ref().is_some_and(|n| !existing.contains(n)))
        .collect()
}

#[cfg(test)]
pub(crate) mod golden_tests;
