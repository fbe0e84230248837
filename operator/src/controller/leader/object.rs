//! The Lease objects the election reads and writes, pure.
//!
//! Every write but the create starts from the object as last read, with its
//! `metadata.resourceVersion`: the `PUT` is then a compare-and-swap the API server refuses with
//! 409 if anyone wrote in between, and the labels, annotations and spec fields we do not use
//! (`preferredHolder`, `strategy`) survive our writes.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use super::decide::{LeaseRead, Timings};

/// The labels of a Lease we create, so that `kubectl get lease -l` finds it.
const LABELS: [(&str, &str); 2] =
    [("app.kubernetes.io/name", "pgwarden-operator"), ("app.kubernetes.io/component", "leader-election")];

/// What we need from a Lease, or why it cannot be used.
pub fn read(lease: &Lease, default_duration: Duration) -> Result<LeaseRead, String> {
    let resource_version = lease
        .metadata
        .resource_version
        .clone()
        .filter(|v| !v.is_empty())
        .ok_or("the Lease has no metadata.resourceVersion")?;
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty());
    let lease_duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_duration, Duration::from_secs);
    Ok(LeaseRead { resource_version, holder, lease_duration })
}

/// A new Lease `namespace/name` held by `identity` since `now`.
pub fn create(name: &str, namespace: &str, identity: &str, timings: &Timings, now: jiff::Timestamp) -> Lease {
    let labels: BTreeMap<String, String> = LABELS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: Some(timings.lease_duration_seconds()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// `base` taken over by `identity` at `now`: one more transition.
pub fn acquire(base: &Lease, identity: &str, timings: &Timings, now: jiff::Timestamp) -> Lease {
    let mut lease = writable(base);
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(identity.to_owned());
    spec.lease_duration_seconds = Some(timings.lease_duration_seconds());
    spec.acquire_time = Some(MicroTime(now));
    spec.renew_time = Some(MicroTime(now));
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    lease
}

/// `base`, which names us, renewed at `now`.
pub fn renew(base: &Lease, timings: &Timings, now: jiff::Timestamp) -> Lease {
    let mut lease = writable(base);
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.lease_duration_seconds = Some(timings.lease_duration_seconds());
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// `base` with no holder: the next candidate may take it at once instead of waiting for it to
/// expire.
pub fn release(base: &Lease, now: jiff::Timestamp) -> Lease {
    let mut lease = writable(base);
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// `base` ready to be sent back: its version kept (the compare-and-swap), the server-owned
/// `managedFields` dropped.
fn writable(base: &Lease) -> Lease {
    let mut lease = base.clone();
    lease.metadata.managed_fields = None;
    lease
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-03-04T05:06:07.123456Z".parse().unwrap()
    }

    fn held(holder: &str, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("pgwarden-operator".into()),
                namespace: Some("pgwarden-system".into()),
                resource_version: Some("42".into()),
                annotations: Some([("keep".to_owned(), "me".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(30),
                lease_transitions: Some(transitions),
                strategy: Some("OldestEmulationVersion".into()),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn read_takes_the_version_the_holder_and_its_duration() {
        let got = read(&held("b", 1), Duration::from_secs(15)).unwrap();
        assert_eq!(
            got,
            LeaseRead {
                resource_version: "42".into(),
                holder: Some("b".into()),
                lease_duration: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn read_takes_an_empty_holder_as_none_and_a_missing_duration_as_ours() {
        let mut lease = held("", 1);
        if let Some(spec) = lease.spec.as_mut() {
            spec.lease_duration_seconds = Some(0);
        }
        let got = read(&lease, Duration::from_secs(15)).unwrap();
        assert_eq!((got.holder, got.lease_duration), (None, Duration::from_secs(15)));
        lease.spec = None;
        assert_eq!(read(&lease, Duration::from_secs(15)).unwrap().lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn read_refuses_a_lease_without_a_version() {
        let mut lease = held("b", 1);
        lease.metadata.resource_version = None;
        assert!(read(&lease, Duration::from_secs(15)).unwrap_err().contains("resourceVersion"));
    }

    #[test]
    fn create_names_us_with_no_version() {
        let lease = create("pgwarden-operator", "pgwarden-system", "a", &Timings::default(), now());
        assert_eq!(lease.metadata.resource_version, None);
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!((spec.lease_duration_seconds, spec.lease_transitions), (Some(15), Some(0)));
        assert_eq!(spec.acquire_time, Some(MicroTime(now())));
    }

    #[test]
    fn acquire_counts_a_transition_and_keeps_the_rest() {
        let lease = acquire(&held("b", 4), "a", &Timings::default(), now());
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("42"), "the compare-and-swap token");
        assert_eq!(lease.metadata.annotations.unwrap()["keep"], "me");
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!((spec.lease_duration_seconds, spec.lease_transitions), (Some(15), Some(5)));
        assert_eq!(spec.strategy.as_deref(), Some("OldestEmulationVersion"));
        assert_eq!((spec.acquire_time.clone(), spec.renew_time), (Some(MicroTime(now())), Some(MicroTime(now()))));
    }

    #[test]
    fn renew_moves_only_the_renew_time() {
        let lease = renew(&held("a", 4), &Timings::default(), now());
        let spec = lease.spec.unwrap();
        assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions), (Some("a"), Some(4)));
        assert_eq!((spec.acquire_time, spec.renew_time), (None, Some(MicroTime(now()))));
    }

    #[test]
    fn release_clears_the_holder_on_the_version_read() {
        let lease = release(&held("a", 4), now());
        assert_eq!(lease.metadata.resource_version.as_deref(), Some("42"));
        let spec = lease.spec.unwrap();
        assert_eq!((spec.holder_identity, spec.lease_transitions), (None, Some(4)));
    }
}
