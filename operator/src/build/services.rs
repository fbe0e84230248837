//! The Services: `-rw` **without a selector** (its EndpointSlice `<cluster>-rw` is written by
//! the lease holder, never by the operator), `-ro` (pods the instances label `replica`), `-r`
//! (every ready instance) and `-headless` (one stable DNS name per instance, published before
//! readiness so that members find each other while they start).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Cluster;
use crate::crd::ServiceTemplate;
use crate::names::{API_PORT, API_PORT_NAME, PG_PORT, PG_PORT_NAME};

fn pg_port() -> ServicePort {
    ServicePort {
        name: Some(PG_PORT_NAME.into()),
        port: PG_PORT,
        target_port: Some(IntOrString::String(PG_PORT_NAME.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn client_service(
    cluster: &Cluster<'_>,
    name: String,
    template: &ServiceTemplate,
    selector: Option<BTreeMap<String, String>>,
) -> Service {
    let mut metadata = cluster.meta(&name);
    if !template.annotations.is_empty() {
        metadata.annotations = Some(template.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(template.r#type.clone().unwrap_or_else(|| "ClusterIP".into())),
            selector,
            ports: Some(vec![pg_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `-rw`, `-ro`, `-r` and `-headless`.
pub fn services(cluster: &Cluster<'_>) -> Vec<Service> {
    let names = &cluster.names;
    let t = &cluster.spec().services;
    let headless = Service {
        metadata: cluster.meta(&names.headless()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(names.selector()),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                pg_port(),
                ServicePort {
                    name: Some(API_PORT_NAME.into()),
                    port: API_PORT,
                    target_port: Some(IntOrString::String(API_PORT_NAME.into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    vec![
        client_service(cluster, names.rw(), &t.rw, None),
        client_service(cluster, names.ro(), &t.ro, Some(names.role_selector("replica"))),
        client_service(cluster, names.r(), &t.r, Some(names.selector())),
        headless,
    ]
}
