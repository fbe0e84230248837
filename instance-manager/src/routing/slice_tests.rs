//! Tests of the pure EndpointSlice builders and decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::*;

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

fn build(term: u64) -> impl FnOnce(Option<&EndpointSlice>) -> EndpointSlice {
    move |existing| desired_slice("db", "pg", "pg-1", IP, 5432, term, existing)
}

/// A slice as the API server returns it after `term`'s holder wrote it.
fn stored(term: u64, version: &str) -> EndpointSlice {
    let mut slice = build(term)(None);
    slice.metadata.resource_version = Some(version.into());
    slice
}

#[test]
fn desired_slice_from_nothing() {
    insta::assert_yaml_snapshot!("desired_slice", desired_slice("db", "pg", "pg-1", IP, 5432, 7, None));
}

#[test]
fn desired_slice_replaces_ours_and_keeps_what_others_put_there() {
    let mut existing = stored(3, "41");
    existing.metadata.labels.as_mut().unwrap().insert("app.kubernetes.io/name".into(), "pgwarden".into());
    existing.metadata.annotations.as_mut().unwrap().insert("note".into(), "keep me".into());
    existing.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: "pg-rw".into(),
        uid: "u-1".into(),
        ..OwnerReference::default()
    }]);
    existing.endpoints.push(Endpoint { addresses: vec!["10.0.0.9".into()], ..Endpoint::default() });

    let v6: IpAddr = "fd00::7".parse().unwrap();
    let slice = desired_slice("db", "pg", "pg-2", v6, 6432, 4, Some(&existing));
    assert_eq!(slice.metadata.resource_version.as_deref(), Some("41"), "the CAS uses the read's version");
    assert_eq!(slice.metadata.owner_references, existing.metadata.owner_references);
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get("app.kubernetes.io/name").map(String::as_str), Some("pgwarden"));
    assert_eq!(labels.get(SERVICE_NAME_LABEL).map(String::as_str), Some("pg-rw"));
    let annotations = slice.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations.get("note").map(String::as_str), Some("keep me"));
    assert_eq!(annotations.get(TERM_ANNOTATION).map(String::as_str), Some("4"));
    assert_eq!(slice.address_type, "IPv6");
    assert_eq!(slice.endpoints.len(), 1, "exactly this pod");
    assert_eq!(slice.endpoints[0].addresses, vec!["fd00::7"]);
    assert_eq!(slice.endpoints[0].target_ref.as_ref().unwrap().name.as_deref(), Some("pg-2"));
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(6432));
}

#[test]
fn desired_slice_is_deterministic_and_a_fixed_point() {
    let first = build(5)(None);
    assert_eq!(first, build(5)(None));
    assert_eq!(serde_json::to_string(&first).unwrap(), serde_json::to_string(&build(5)(None)).unwrap());
    assert_eq!(build(5)(Some(&first)), first, "building on the result changes nothing");
}

#[test]
fn stored_term_reads_the_annotation() {
    assert_eq!(stored_term(&stored(12, "1")), Ok(Some(12)));
    assert_eq!(stored_term(&EndpointSlice::default()), Ok(None));
    let mut bad = stored(1, "1");
    bad.metadata.annotations.as_mut().unwrap().insert(TERM_ANNOTATION.into(), "-1".into());
    let e = stored_term(&bad).unwrap_err();
    assert_eq!(e, BadTerm { value: "-1".into() });
    assert!(e.to_string().contains("\"-1\""), "{e}");
}

#[test]
fn publish_creates_when_missing() {
    assert_eq!(plan_publish(3, None, build(3)), Ok(Publish::Create(build(3)(None))));
}

#[test]
fn publish_replaces_a_lower_term_and_an_unstamped_slice() {
    let existing = stored(2, "41");
    let Ok(Publish::Replace(slice)) = plan_publish(3, Some(&existing), build(3)) else { panic!("expected a replace") };
    assert_eq!(stored_term(&slice), Ok(Some(3)));
    assert_eq!(slice.metadata.resource_version.as_deref(), Some("41"));

    let pre_created = EndpointSlice {
        address_type: "IPv4".into(),
        metadata: kube::core::ObjectMeta { name: Some("pg-rw".into()), ..Default::default() },
        ..EndpointSlice::default()
    };
    assert!(matches!(plan_publish(1, Some(&pre_created), build(1)), Ok(Publish::Replace(_))));
}

#[test]
fn publish_refuses_a_higher_term() {
    let existing = stored(5, "41");
    assert_eq!(plan_publish(4, Some(&existing), build(4)), Err(RoutingError::StaleTerm { ours: 4, theirs: 5 }));
}

#[test]
fn publish_of_the_same_term_is_idempotent() {
    let existing = stored(4, "41");
    assert_eq!(plan_publish(4, Some(&existing), build(4)), Ok(Publish::Unchanged));
    // Our own term, emptied by an earlier release: routing is restored.
    let released = plan_release(4, Some(&existing)).unwrap();
    assert!(matches!(plan_publish(4, Some(&released), build(4)), Ok(Publish::Replace(_))));
}

#[test]
fn publish_refuses_an_unreadable_term_and_an_address_family_change() {
    let mut bad = stored(1, "1");
    bad.metadata.annotations.as_mut().unwrap().insert(TERM_ANNOTATION.into(), "seven".into());
    let Err(RoutingError::Rejected { message }) = plan_publish(9, Some(&bad), build(9)) else { panic!() };
    assert!(message.contains("db/pg-rw") && message.contains("hint:"), "{message}");

    let v4 = stored(1, "1");
    let v6: IpAddr = "fd00::7".parse().unwrap();
    let to_v6 = |existing: Option<&EndpointSlice>| desired_slice("db", "pg", "pg-1", v6, 5432, 2, existing);
    let Err(RoutingError::Rejected { message }) = plan_publish(2, Some(&v4), to_v6) else { panic!() };
    assert!(message.contains("addressType is immutable"), "{message}");
}

#[test]
fn release_empties_only_our_term() {
    let ours = stored(4, "41");
    let released = plan_release(4, Some(&ours)).expect("ours: emptied");
    assert!(released.endpoints.is_empty());
    assert_eq!(stored_term(&released), Ok(Some(4)), "the term stays, so older holders stay refused");
    assert_eq!(released.metadata.resource_version.as_deref(), Some("41"));
    assert_eq!(plan_release(4, Some(&released)), None, "already empty");
    assert_eq!(plan_release(3, Some(&ours)), None, "a successor's slice is not ours to clear");
    assert_eq!(plan_release(5, Some(&ours)), None);
    assert_eq!(plan_release(4, None), None);
    assert_eq!(plan_release(4, Some(&EndpointSlice::default())), None, "unstamped");
}
