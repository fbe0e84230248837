//! One PVC per instance, `<cluster>-N` (and `<cluster>-N-wal`). A Pod is re-created on its PVC.
//! The PVC is owned by the cluster, so deleting the cluster deletes its volumes, unless
//! `pvcRetentionPolicy.whenDeleted` is `Retain`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Cluster;

/// Instance `n`'s data volume.
pub fn pvc(cluster: &Cluster<'_>, n: i32) -> PersistentVolumeClaim {
    claim(cluster, n, &cluster.names.instance(n), &cluster.spec().storage)
}

/// Instance `n`'s WAL volume, when the spec asks for one.
pub fn wal_pvc(cluster: &Cluster<'_>, n: i32) -> Option<PersistentVolumeClaim> {
    let storage = cluster.spec().wal_storage.as_ref()?;
    Some(claim(cluster, n, &cluster.names.wal_volume(n), storage))
}

fn claim(cluster: &Cluster<'_>, n: i32, name: &str, storage: &crate::crd::Storage) -> PersistentVolumeClaim {
    let mut metadata = cluster.meta_with(name, cluster.names.instance_labels(n));
    if cluster.spec().pvc_retention_policy.when_deleted == crate::crd::RetentionAction::Retain {
        // Not owned: deleting the cluster leaves it.
        metadata.owner_references = None;
    }
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(storage.size.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
