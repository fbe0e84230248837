//! What to write, decided without I/O: every desired object is stamped with the hash of its
//! content ([`HASH_ANNOTATION`]); an object whose stored hash is equal is not sent at all. A
//! server-side apply of an unchanged object would be a no-op on the server too, but it is
//! still a write request, and a reconcile of every cluster every 30 s would send hundreds.
//!
//! Two policies:
//! - [`Policy::Apply`]: the operator owns the object's content (ConfigMap, RBAC, Services,
//!   PodDisruptionBudgets, the operator's certificate Secret at renewal): applied whenever its
//!   hash differs, so a change of the spec reaches it and a hand edit of a field we own is put
//!   back at the next change.
//! - [`Policy::CreateOnly`]: made once, never rewritten here — Secrets with generated
//!   credentials (a password is never regenerated), PVCs and Pods (growing a volume and
//!   re-creating a pod with a new spec are rolling operations of their own).

use std::collections::BTreeMap;

use kube::api::ApiResource;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::names::HASH_ANNOTATION;

/// How an object is kept in line with its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Applied whenever its content hash changes.
    Apply,
    /// Created when missing, otherwise left alone.
    CreateOnly,
}

/// One object as it should be.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Its kind, for the API path.
    pub resource: ApiResource,
    /// Its name.
    pub name: String,
    /// The body to apply, hash annotation included.
    pub body: Value,
    /// The hash of its content.
    pub hash: String,
    /// Its policy.
    pub policy: Policy,
}

impl Planned {
    /// `kind/name`, for logs and events.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.resource.kind, self.name)
    }
}

/// Stamps `object` with its content hash and plans it under `policy`.
pub fn plan<K>(object: &K, policy: Policy) -> Result<Planned, serde_json::Error>
where
    K: kube::Resource<DynamicType = ()> + Serialize,
{
    let mut body = serde_json::to_value(object)?;
    let hash = content_hash(&body);
    let meta = body.as_object_mut().and_then(|o| o.get_mut("metadata")).and_then(Value::as_object_mut);
    if let Some(meta) = meta {
        let annotations = meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(HASH_ANNOTATION.to_owned(), Value::String(hash.clone()));
        }
    }
    Ok(Planned {
        resource: ApiResource::erase::<K>(&()),
        name: object.meta().name.clone().unwrap_or_default(),
        body,
        hash,
        policy,
    })
}

/// SHA-256 of the JSON text, as 64 hexadecimal digits. The builders are deterministic and
/// serialisation follows field order, so equal content gives equal text.
pub fn content_hash(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What exists, by `(kind, name)`: the stored hash annotation, if any.
pub type Stored = BTreeMap<(String, String), Option<String>>;

/// Why an object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It does not exist.
    Missing,
    /// It exists with other content (its hash differs).
    Changed,
}

/// The objects to write, and why.
pub fn writes<'a>(planned: &'a [Planned], stored: &Stored) -> Vec<(&'a Planned, Reason)> {
    planned
        .iter()
        .filter_map(|p| match stored.get(&(p.resource.kind.clone(), p.name.clone())) {
            None => Some((p, Reason::Missing)),
            Some(_) if p.policy == Policy::CreateOnly => None,
            Some(hash) if hash.as_deref() == Some(p.hash.as_str()) => None,
            Some(_) => Some((p, Reason::Changed)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::ObjectMeta;

    use super::*;

    fn cm(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            data: Some(BTreeMap::from([("k".to_owned(), value.to_owned())])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn an_unchanged_object_is_not_written_a_changed_one_is() {
        let a = plan(&cm("x", "1"), Policy::Apply).expect("plan");
        assert_eq!(a.body["metadata"]["annotations"][HASH_ANNOTATION], a.hash.as_str());
        assert_eq!(a.body["kind"], "ConfigMap");
        let mut stored = Stored::new();
        assert_eq!(writes(std::slice::from_ref(&a), &stored)[0].1, Reason::Missing);
        stored.insert(("ConfigMap".into(), "x".into()), Some(a.hash.clone()));
        assert!(writes(std::slice::from_ref(&a), &stored).is_empty());
        let b = plan(&cm("x", "2"), Policy::Apply).expect("plan");
        assert_ne!(a.hash, b.hash);
        assert_eq!(writes(std::slice::from_ref(&b), &stored)[0].1, Reason::Changed);
        // An object someone else made (no hash) is taken over by an apply.
        stored.insert(("ConfigMap".into(), "x".into()), None);
        assert_eq!(writes(std::slice::from_ref(&b), &stored)[0].1, Reason::Changed);
    }

    #[test]
    fn create_only_objects_are_never_rewritten() {
        let p = plan(
            &Pod { metadata: ObjectMeta { name: Some("pg-1".into()), ..ObjectMeta::default() }, ..Pod::default() },
            Policy::CreateOnly,
        )
        .expect("plan");
        let mut stored = Stored::new();
        stored.insert(("Pod".into(), "pg-1".into()), Some("other".into()));
        assert!(writes(std::slice::from_ref(&p), &stored).is_empty());
        stored.clear();
        assert_eq!(writes(std::slice::from_ref(&p), &stored).len(), 1);
    }

    #[test]
    fn the_hash_is_stable() {
        let a = plan(&cm("x", "1"), Policy::Apply).expect("plan");
        let b = plan(&cm("x", "1"), Policy::Apply).expect("plan");
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 64);
    }
}
