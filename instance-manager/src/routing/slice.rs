//! The `-rw` EndpointSlice as pure functions: what it should hold, and whether to write it.
//!
//! The shell ([`super::KubernetesRouting`]) only reads the slice, asks these functions what to
//! do, and sends the answer with the version of that same read.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};

use super::{MANAGED_BY, PORT_NAME, RoutingError, TERM_ANNOTATION};

/// The label tying a slice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label telling the EndpointSlice controllers who manages a slice.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// The `-rw` EndpointSlice pointing at exactly one pod, stamped with `term`.
///
/// Built on `existing` when there is one, so that what others put there (owner references,
/// other labels and annotations, `resourceVersion` for the compare-and-swap) survives; the
/// endpoints, ports, address type, our two labels and the term annotation are ours and are
/// replaced. Deterministic: the same inputs give the same object, and building on the result
/// changes nothing, which is how an already-correct slice is left unwritten.
pub fn desired_slice(
    namespace: &str,
    cluster: &str,
    pod: &str,
    ip: IpAddr,
    port: u16,
    term: u64,
    existing: Option<&EndpointSlice>,
) -> EndpointSlice {
    let mut slice = existing.cloned().unwrap_or_default();
    let name = format!("{cluster}-rw");
    let meta = &mut slice.metadata;
    meta.name = Some(name.clone());
    meta.namespace = Some(namespace.to_string());
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(SERVICE_NAME_LABEL.into(), name);
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(TERM_ANNOTATION.into(), term.to_string());

    slice.address_type = match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
    .into();
    slice.endpoints = vec![Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(namespace.to_string()),
            name: Some(pod.to_string()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }];
    slice.ports = Some(vec![EndpointPort {
        name: Some(PORT_NAME.into()),
        port: Some(i32::from(port)),
        protocol: Some("TCP".into()),
        app_protocol: None,
    }]);
    slice
}

/// A slice whose [`TERM_ANNOTATION`] is not a term: it cannot be ordered against ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {TERM_ANNOTATION} is not a term: {value:?}")]
pub struct BadTerm {
    /// The annotation's value.
    pub value: String,
}

/// The term a slice is stamped with: `None` if it carries no [`TERM_ANNOTATION`] (never
/// written by pgwarden, e.g. pre-created empty); the error says what is malformed.
pub fn stored_term(slice: &EndpointSlice) -> std::result::Result<Option<u64>, BadTerm> {
    let Some(value) = slice.metadata.annotations.as_ref().and_then(|a| a.get(TERM_ANNOTATION)) else {
        return Ok(None);
    };
    value.trim().parse::<u64>().map(Some).map_err(|_| BadTerm { value: value.clone() })
}

/// What [`super::Routing::became_primary`] must send.
#[derive(Debug, PartialEq)]
pub(super) enum Publish {
    /// There is no slice: create this one.
    Create(EndpointSlice),
    /// Replace the slice with this one (it carries the read's `resourceVersion`).
    Replace(EndpointSlice),
    /// The slice already routes to us under our term: write nothing.
    Unchanged,
}

/// Decides the write that points routing at us under `term`, given the slice as just read.
/// `build` is [`desired_slice`] with everything but `existing` bound.
///
/// Refuses ([`RoutingError::StaleTerm`]) when a newer holder stamped the slice, and
/// ([`RoutingError::Rejected`]) when the stored term is unreadable — a slice we cannot order
/// against ours is not overwritten — or when the address family would change (`addressType`
/// is immutable).
pub(super) fn plan_publish(
    term: u64,
    existing: Option<&EndpointSlice>,
    build: impl FnOnce(Option<&EndpointSlice>) -> EndpointSlice,
) -> std::result::Result<Publish, RoutingError> {
    let Some(existing) = existing else { return Ok(Publish::Create(build(None))) };
    let hint = "hint: delete the EndpointSlice; the primary recreates it";
    match stored_term(existing) {
        Err(why) => return Err(RoutingError::Rejected { message: format!("{}: {why}; {hint}", name_of(existing)) }),
        Ok(Some(theirs)) if theirs > term => return Err(RoutingError::StaleTerm { ours: term, theirs }),
        Ok(_) => {}
    }
    let desired = build(Some(existing));
    if desired == *existing {
        return Ok(Publish::Unchanged);
    }
    if !existing.address_type.is_empty() && desired.address_type != existing.address_type {
        return Err(RoutingError::Rejected {
            message: format!(
                "{} has addressType {} but this pod's address is {} (addressType is immutable); {hint}",
                name_of(existing),
                existing.address_type,
                desired.address_type
            ),
        });
    }
    Ok(Publish::Replace(desired))
}

/// The slice to send so that routing under `term` stops, or `None` when there is nothing to
/// do: no slice, a slice of another term (or none: not ours to clear), or already empty.
pub(super) fn plan_release(term: u64, existing: Option<&EndpointSlice>) -> Option<EndpointSlice> {
    let existing = existing?;
    if stored_term(existing) != Ok(Some(term)) || existing.endpoints.is_empty() {
        return None;
    }
    // The term stays: a successor (higher term) may still take over, an older one may not.
    Some(EndpointSlice { endpoints: Vec::new(), ..existing.clone() })
}

fn name_of(slice: &EndpointSlice) -> String {
    format!(
        "EndpointSlice {}/{}",
        slice.metadata.namespace.as_deref().unwrap_or_default(),
        slice.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
#[path = "slice_tests.rs"]
mod tests;
