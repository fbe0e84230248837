//! The instances' identity: a ServiceAccount and a Role with exactly what the instance manager
//! calls — the Lease (election), the `-rw` EndpointSlice (routing) and its own Pod (the role
//! label). Nothing cluster-wide, no list or watch, no delete.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::Cluster;

/// `<cluster>-instance`.
pub fn service_account(cluster: &Cluster<'_>) -> ServiceAccount {
    ServiceAccount { metadata: cluster.meta(&cluster.names.service_account()), ..ServiceAccount::default() }
}

fn rule(group: &str, resource: &str, verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    }
}

/// `<cluster>-instance`: leases get/create/update, endpointslices get/create/update, pods
/// get/patch.
pub fn role(cluster: &Cluster<'_>) -> Role {
    Role {
        metadata: cluster.meta(&cluster.names.service_account()),
        rules: Some(vec![
            rule("coordination.k8s.io", "leases", &["get", "create", "update"]),
            rule("discovery.k8s.io", "endpointslices", &["get", "create", "update"]),
            rule("", "pods", &["get", "patch"]),
        ]),
    }
}

/// Binds the Role to the ServiceAccount.
pub fn role_binding(cluster: &Cluster<'_>) -> RoleBinding {
    let name = cluster.names.service_account();
    RoleBinding {
        metadata: cluster.meta(&name),
        role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "Role".into(), name: name.clone() },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(cluster.names.namespace.clone()),
            ..Subject::default()
        }]),
    }
}
