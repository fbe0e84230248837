//! Growing volumes: when `storage.size` (or `walStorage.size`) grows, every PVC of the cluster
//! is patched to the new size in place. The API server and the CSI driver do the rest: the
//! volume grows, then its filesystem (online, or at the pod's next start when the driver says
//! `FileSystemResizePending`). A StorageClass without `allowVolumeExpansion` makes the API
//! server refuse the patch; that is shown in the status and an Event, never retried in a loop
//! that hides it. Shrinking is refused earlier, by the CRD's rules; a PVC larger than the spec
//! asks is left alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use crate::crd::VolumeResize;

/// Bytes of a Kubernetes quantity (`10Gi`, `500M`, `1.5Ti`, `1073741824`, `1e9`); `None` when it
/// is not one.
pub fn bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        s if s.starts_with(['e', 'E']) => 10u128.checked_pow(s[1..].parse().ok()?)?,
        _ => return None,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut total = int.checked_mul(factor)?;
    if !frac.is_empty() {
        let digits: u32 = frac.len().try_into().ok()?;
        let frac: u128 = frac.parse().ok()?;
        total = total.checked_add(frac.checked_mul(factor)? / 10u128.checked_pow(digits)?)?;
    }
    Some(total)
}

fn requested(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?.get("storage").map(|q| q.0.clone())
}

fn capacity(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.status.as_ref()?.capacity.as_ref()?.get("storage").map(|q| q.0.clone())
}

/// The PVCs to grow: `(name, new size)` for every existing PVC whose request is below what the
/// desired PVC of the same name asks.
pub fn to_grow(desired: &[PersistentVolumeClaim], observed: &[PersistentVolumeClaim]) -> Vec<(String, String)> {
    let have: BTreeMap<String, &PersistentVolumeClaim> = observed.iter().map(|p| (p.name_any(), p)).collect();
    desired
        .iter()
        .filter_map(|d| {
            let name = d.name_any();
            let want = requested(d)?;
            let now = requested(have.get(&name)?)?;
            (bytes(&want)? > bytes(&now)?).then_some((name, want))
        })
        .collect()
}

/// Volumes whose growth is not finished: requested above capacity, or the filesystem waiting;
/// `refused` adds the PVCs the API server would not grow, with its message.
pub fn progress(
    observed: &[PersistentVolumeClaim],
    refused: &BTreeMap<String, String>,
) -> BTreeMap<String, VolumeResize> {
    let mut out = BTreeMap::new();
    for pvc in observed {
        let name = pvc.name_any();
        let (Some(req), cap) = (requested(pvc), capacity(pvc)) else { continue };
        let conditions: Vec<String> = pvc
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        let pending_fs = conditions.iter().any(|c| c == "FileSystemResizePending");
        let smaller = match (&cap, bytes(&req)) {
            (Some(c), Some(r)) => bytes(c).is_some_and(|c| c < r),
            _ => false,
        };
        let state = if let Some(m) = refused.get(&name) {
            Some(("Refused", Some(m.clone())))
        } else if pending_fs {
            Some((
                "FileSystemResizePending",
                Some("the volume grew; its filesystem grows when the pod restarts or the node expands it".into()),
            ))
        } else if smaller || conditions.iter().any(|c| c == "Resizing") {
            Some(("Resizing", None))
        } else {
            None
        };
        if let Some((state, message)) = state {
            out.insert(name, VolumeResize { requested: req, capacity: cap, state: state.into(), message });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimCondition, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    use super::*;

    #[test]
    fn quantities_are_compared_as_bytes() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("500M"), Some(500_000_000));
        assert_eq!(bytes("1073741824"), Some(1 << 30));
        assert_eq!(bytes("1e3"), Some(1000));
        assert!(bytes("10000Mi") < bytes("10Gi"));
        assert_eq!(bytes("ten"), None);
        assert_eq!(bytes("1Qi"), None);
        assert_eq!(bytes(""), None);
    }

    fn pvc(name: &str, request: &str, capacity: Option<&str>, conditions: &[&str]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), Quantity(request.into()))].into()),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                capacity: capacity.map(|c| [("storage".to_owned(), Quantity(c.into()))].into()),
                conditions: Some(
                    conditions
                        .iter()
                        .map(|c| PersistentVolumeClaimCondition {
                            type_: (*c).into(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..PersistentVolumeClaimStatus::default()
            }),
        }
    }

    #[test]
    fn only_smaller_pvcs_grow_and_a_larger_one_is_left_alone() {
        let desired =
            vec![pvc("pg-1", "20Gi", None, &[]), pvc("pg-2", "20Gi", None, &[]), pvc("pg-3", "20Gi", None, &[])];
        let observed = vec![
            pvc("pg-1", "10Gi", Some("10Gi"), &[]),
            pvc("pg-2", "20Gi", Some("10Gi"), &[]),
            pvc("pg-3", "30Gi", Some("30Gi"), &[]),
        ];
        assert_eq!(to_grow(&desired, &observed), vec![("pg-1".to_owned(), "20Gi".to_owned())]);
    }

    #[test]
    fn progress_says_where_each_volume_is() {
        let observed = vec![
            pvc("pg-1", "20Gi", Some("10Gi"), &["Resizing"]),
            pvc("pg-2", "20Gi", Some("20Gi"), &["FileSystemResizePending"]),
            pvc("pg-3", "20Gi", Some("20Gi"), &[]),
            pvc("pg-4", "10Gi", Some("10Gi"), &[]),
        ];
        let refused = BTreeMap::from([("pg-4".to_owned(), "storageclass does not allow expansion".to_owned())]);
        let p = progress(&observed, &refused);
        assert_eq!(p["pg-1"].state, "Resizing");
        assert_eq!(p["pg-2"].state, "FileSystemResizePending");
        assert!(!p.contains_key("pg-3"));
        assert_eq!(p["pg-4"].state, "Refused");
    }
}
