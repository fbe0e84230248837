//! The names and labels of everything a cluster owns, in one place: the instances, the
//! operator's builders and the status all agree on them (docs/architecture.md §13).

use std::collections::BTreeMap;

/// Label on every object of a cluster: the cluster's name.
pub const CLUSTER_LABEL: &str = "pgwarden.io/cluster";
/// Label on an instance's Pod and PVC: the instance's name (`<cluster>-N`).
pub const INSTANCE_LABEL: &str = "pgwarden.io/instance";
/// The pod label the **instances** write (`primary`/`replica`); the operator selects on it
/// (`-ro`, the PodDisruptionBudgets) and never writes it.
pub const ROLE_LABEL: &str = "pgwarden.io/role";
/// The field manager of every server-side apply the operator sends.
pub const FIELD_MANAGER: &str = "pgwarden-operator";
/// Annotation on every object the operator applies: the hash of what it applied. Equal hash,
/// no write (a second reconcile of an unchanged cluster sends none).
pub const HASH_ANNOTATION: &str = "pgwarden.io/applied-hash";
/// The container port names.
pub const PG_PORT_NAME: &str = "postgres";
/// The instance API's port name.
pub const API_PORT_NAME: &str = "api";
/// The metrics port name.
pub const METRICS_PORT_NAME: &str = "metrics";
/// Postgres' port.
pub const PG_PORT: i32 = 5432;
/// The instance API's port.
pub const API_PORT: i32 = 8000;
/// The metrics port (CloudNativePG's).
pub const METRICS_PORT: i32 = 9187;

/// The names of one cluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The cluster's name.
    pub cluster: String,
    /// Its namespace.
    pub namespace: String,
}

impl Names {
    /// The names of `cluster` in `namespace`.
    pub fn new(cluster: &str, namespace: &str) -> Self {
        Self { cluster: cluster.to_owned(), namespace: namespace.to_owned() }
    }
    /// Instance `n` (1-based): its Pod and its PVC.
    pub fn instance(&self, n: i32) -> String {
        format!("{}-{n}", self.cluster)
    }
    /// The instance number of an instance's name, if it is one of this cluster's.
    pub fn instance_number(&self, name: &str) -> Option<i32> {
        let n: i32 = name.strip_prefix(&self.cluster)?.strip_prefix('-')?.parse().ok()?;
        (n >= 1 && name == self.instance(n)).then_some(n)
    }
    /// Instance `n`'s WAL volume.
    pub fn wal_volume(&self, n: i32) -> String {
        format!("{}-{n}-wal", self.cluster)
    }
    /// `<cluster>-<suffix>`.
    pub fn suffixed(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.cluster)
    }
    /// The Service routing to the primary (no selector: the lease holder writes its
    /// EndpointSlice).
    pub fn rw(&self) -> String {
        self.suffixed("rw")
    }
    /// The Service routing to the replicas.
    pub fn ro(&self) -> String {
        self.suffixed("ro")
    }
    /// The Service routing to any ready instance.
    pub fn r(&self) -> String {
        self.suffixed("r")
    }
    /// The headless Service giving each instance a stable DNS name.
    pub fn headless(&self) -> String {
        self.suffixed("headless")
    }
    /// The primary's Lease (the instances' default, `lease.name`).
    pub fn lease(&self) -> String {
        self.suffixed("primary")
    }
    /// The ConfigMap holding `instance.yaml`.
    pub fn config(&self) -> String {
        self.suffixed("config")
    }
    /// The instances' ServiceAccount, Role and RoleBinding.
    pub fn service_account(&self) -> String {
        self.suffixed("instance")
    }
    /// The superuser's Secret when the spec names none.
    pub fn superuser_secret(&self) -> String {
        self.suffixed("superuser")
    }
    /// The application owner's Secret when the spec names none.
    pub fn app_secret(&self) -> String {
        self.suffixed("app")
    }
    /// `streaming_replica`'s Secret.
    pub fn replication_secret(&self) -> String {
        self.suffixed("replication")
    }
    /// The instance API's bearer token.
    pub fn token_secret(&self) -> String {
        self.suffixed("api-token")
    }
    /// The operator-managed CA (certificate and key).
    pub fn ca_secret(&self) -> String {
        self.suffixed("ca")
    }
    /// The operator-managed server certificate when the spec names none.
    pub fn server_secret(&self) -> String {
        self.suffixed("server")
    }
    /// The PodDisruptionBudget keeping the primary.
    pub fn primary_pdb(&self) -> String {
        self.suffixed("primary")
    }
    /// The PodDisruptionBudget keeping a quorum of replicas.
    pub fn replicas_pdb(&self) -> String {
        self.suffixed("replicas")
    }
    /// An instance's DNS name through the headless Service, as members and the operator reach it.
    pub fn instance_host(&self, n: i32) -> String {
        format!("{}.{}.{}.svc", self.instance(n), self.headless(), self.namespace)
    }
    /// Every DNS name the server certificate must carry: the Services in their short and
    /// qualified forms, and every instance through the headless Service (a wildcard, so that
    /// scaling needs no new certificate).
    pub fn server_dns_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for svc in [self.rw(), self.ro(), self.r()] {
            names.push(svc.clone());
            names.push(format!("{svc}.{}", self.namespace));
            names.push(format!("{svc}.{}.svc", self.namespace));
            names.push(format!("{svc}.{}.svc.cluster.local", self.namespace));
        }
        names.push(format!("*.{}.{}.svc", self.headless(), self.namespace));
        names.push(format!("*.{}.{}.svc.cluster.local", self.headless(), self.namespace));
        names
    }
    /// The labels of every object of the cluster.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CLUSTER_LABEL.to_owned(), self.cluster.clone()),
            ("app.kubernetes.io/name".to_owned(), "postgresql".to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.cluster.clone()),
            ("app.kubernetes.io/managed-by".to_owned(), "pgwarden".to_owned()),
        ])
    }
    /// The labels of instance `n`'s Pod and PVC.
    pub fn instance_labels(&self, n: i32) -> BTreeMap<String, String> {
        let mut labels = self.labels();
        labels.insert(INSTANCE_LABEL.to_owned(), self.instance(n));
        labels
    }
    /// The selector of every instance of the cluster.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(CLUSTER_LABEL.to_owned(), self.cluster.clone())])
    }
    /// The selector of the instances in `role` (the label the instances write).
    pub fn role_selector(&self, role: &str) -> BTreeMap<String, String> {
        let mut s = self.selector();
        s.insert(ROLE_LABEL.to_owned(), role.to_owned());
        s
    }
    /// `pgwarden.io/cluster=<cluster>`: what lists of owned objects select.
    pub fn label_selector(&self) -> String {
        format!("{CLUSTER_LABEL}={}", self.cluster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_numbers_round_trip_and_refuse_other_names() {
        let n = Names::new("pg", "db");
        assert_eq!(n.instance(3), "pg-3");
        assert_eq!(n.instance_number("pg-3"), Some(3));
        assert_eq!(n.instance_number("pg-03"), None);
        assert_eq!(n.instance_number("pg-0"), None);
        assert_eq!(n.instance_number("pgx-1"), None);
        assert_eq!(n.instance_number("pg-rw"), None);
        assert_eq!(n.instance_host(2), "pg-2.pg-headless.db.svc");
    }
}
