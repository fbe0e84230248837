//! What exists: one list per owned kind, selected by the cluster's label, the Lease the
//! instances elect through, and the Secrets the spec names. Reads only; a steady-state
//! reconcile of a cluster costs these requests and nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::plan::Stored;
use crate::names::{HASH_ANNOTATION, Names};

/// What one reconcile saw.
#[derive(Debug, Default)]
pub struct Observed {
    /// Every owned object by `(kind, name)`, with its applied hash.
    pub stored: Stored,
    /// Secrets by name: the cluster's and those its spec names.
    pub secrets: BTreeMap<String, Secret>,
    /// The instances' Pods.
    pub pods: Vec<Pod>,
    /// The instances' PVCs.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The primary's Lease, written by the instances only.
    pub lease: Option<Lease>,
}

async fn list<K>(client: &kube::Client, names: &Names, stored: &mut Stored) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &names.namespace);
    let items = api.list(&ListParams::default().labels(&names.label_selector())).await?.items;
    for o in &items {
        let hash = o.annotations().get(HASH_ANNOTATION).cloned();
        stored.insert((K::kind(&()).into_owned(), o.name_any()), hash);
    }
    Ok(items)
}

/// Reads what exists of the cluster `names`, and the Secrets named in `extra_secrets`.
pub async fn observe(client: &kube::Client, names: &Names, extra_secrets: &[String]) -> Result<Observed, kube::Error> {
    let mut stored = Stored::new();
    let secrets: Vec<Secret> = list(client, names, &mut stored).await?;
    list::<ConfigMap>(client, names, &mut stored).await?;
    list::<ServiceAccount>(client, names, &mut stored).await?;
    list::<Role>(client, names, &mut stored).await?;
    list::<RoleBinding>(client, names, &mut stored).await?;
    list::<Service>(client, names, &mut stored).await?;
    list::<PodDisruptionBudget>(client, names, &mut stored).await?;
    let pvcs = list(client, names, &mut stored).await?;
    let pods = list(client, names, &mut stored).await?;
    let mut secrets: BTreeMap<String, Secret> = secrets.into_iter().map(|s| (s.name_any(), s)).collect();
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    for name in extra_secrets {
        if !secrets.contains_key(name)
            && let Some(s) = secret_api.get_opt(name).await?
        {
            secrets.insert(name.clone(), s);
        }
    }
    let lease = Api::<Lease>::namespaced(client.clone(), &names.namespace).get_opt(&names.lease()).await?;
    Ok(Observed { stored, secrets, pods, pvcs, lease })
}
