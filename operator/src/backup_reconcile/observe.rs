//! A pass's inputs, gathered: the cluster, the holder of its primary Lease, the Pod and
//! `/status` of the instance that matters, the store's catalog; and the one call that acts,
//! `POST /backup` ([`Observed::ask`]).
//!
//! **Order.** The asked instance's `/status` is read before the catalog. An instance writes a
//! backup's `backup.json` (which puts it in the catalog) before it clears its running backup,
//! so a backup seen not running is, when it succeeded, in a catalog read afterwards: reading
//! the other way round could take a backup finishing between the two reads for one that
//! vanished.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use pgwarden_contract::{BackupList, BackupRequest, BackupStarted, InstanceStatus};

use super::decide::{Catalog, ClusterSeen, InstanceSeen, InstanceView, StartAnswer};
use crate::build::{Cluster, pod};
use crate::crd::{BackupPhase, PostgresBackupStatus, PostgresCluster};
use crate::instances::{self, Answer, CALL_TIMEOUT, CONTROL_TIMEOUT, Target};
use crate::names::{API_PORT, Names};
use crate::reconcile::act::InstanceApi;

/// What one pass saw, and how to reach the instance that matters.
#[derive(Debug)]
pub struct Observed {
    /// The cluster.
    pub cluster: ClusterSeen,
    /// The asked instance once there is one, else the Lease holder.
    pub instance: Option<InstanceSeen>,
    /// The catalog, when an instance was asked.
    pub catalog: Option<Result<Catalog, String>>,
    /// Where [`Observed::instance`] is reached.
    target: Option<Target>,
}

/// How the operator talks to a cluster's instances: the CA their certificates are checked
/// with, and the API token.
struct Trust {
    tls: Result<Arc<rustls::ClientConfig>, String>,
    token: Option<String>,
}

/// Reads what a pass of the backup of `cluster_name` in `namespace`, at `status`, needs.
pub async fn observe(
    client: &kube::Client,
    api: &dyn InstanceApi,
    namespace: &str,
    cluster_name: &str,
    status: &PostgresBackupStatus,
) -> Result<Observed, kube::Error> {
    let names = Names::new(cluster_name, namespace);
    let cluster = Api::<PostgresCluster>::namespaced(client.clone(), namespace).get_opt(cluster_name).await?;
    let holder = match &cluster {
        Some(_) => lease_holder(client, &names).await?,
        None => None,
    };
    let seen_cluster = match &cluster {
        None => ClusterSeen::Missing,
        Some(c) if c.spec.backup.is_none() => ClusterSeen::NoStore,
        Some(_) => ClusterSeen::Ready { primary: holder.clone() },
    };
    let asked =
        status.instance_id.as_ref().filter(|_| status.phase() == BackupPhase::Started).map(|i| i.pod_name.clone());
    let who = match (&asked, &seen_cluster) {
        (Some(a), _) => Some(a.clone()),
        (None, ClusterSeen::Ready { primary }) => primary.clone(),
        (None, _) => None,
    };
    let Some(who) = who else {
        return Ok(Observed { cluster: seen_cluster, instance: None, catalog: None, target: None });
    };
    let trust = trust(client, &names, cluster.as_ref()).await?;
    let (instance, target) = instance(client, api, &names, &trust, &who).await?;
    let catalog = match &asked {
        None => None,
        Some(_) if instance.answer.is_ok() => match &target {
            Some(t) => Some(catalog(api, t).await),
            None => None,
        },
        // The asked instance does not answer: any instance lists the same store.
        Some(_) => match holder.filter(|h| *h != who) {
            Some(h) => match instance_target(client, &names, &trust, &h).await? {
                (_, Some(t)) => Some(catalog(api, &t).await),
                _ => None,
            },
            None => None,
        },
    };
    Ok(Observed { cluster: seen_cluster, instance: Some(instance), catalog, target })
}

impl Observed {
    /// `POST /backup` (not waiting for it to end) to `instance`, which must be the instance
    /// observed.
    pub async fn ask(&self, api: &dyn InstanceApi, instance: &str) -> StartAnswer {
        let Some(target) = self.target.as_ref().filter(|t| t.name == instance) else {
            return StartAnswer::NoAnswer(format!("{instance} has no address"));
        };
        let body = match serde_json::to_value(BackupRequest { from_standby: false, wait: false }) {
            Ok(body) => body,
            Err(e) => return StartAnswer::NoAnswer(format!("the request could not be written: {e}")),
        };
        match api.request(target, http::Method::POST, "/backup", Some(body), CONTROL_TIMEOUT).await {
            Ok(answer) if answer.status.is_success() => match serde_json::from_value::<BackupStarted>(answer.body) {
                Ok(started) => StartAnswer::Accepted(started.id),
                Err(e) => StartAnswer::NoAnswer(format!("{instance} answered POST /backup without an id: {e}")),
            },
            Ok(answer) => {
                StartAnswer::NotStarted { status: answer.status, message: answer.refusal(instance, "/backup") }
            }
            Err(why) => StartAnswer::NoAnswer(why),
        }
    }
}

async fn lease_holder(client: &kube::Client, names: &Names) -> Result<Option<String>, kube::Error> {
    let lease = Api::<Lease>::namespaced(client.clone(), &names.namespace).get_opt(&names.lease()).await?;
    Ok(lease.and_then(|l| l.spec).and_then(|s| s.holder_identity).filter(|h| !h.is_empty()))
}

fn secret_key(secret: Option<&Secret>, key: &str) -> Option<String> {
    let bytes = secret?.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// The cluster's CA (from its server certificate's Secret: the operator's or the one the
/// spec names) and API token.
async fn trust(client: &kube::Client, names: &Names, cluster: Option<&PostgresCluster>) -> Result<Trust, kube::Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), &names.namespace);
    let server_secret =
        cluster.and_then(|c| Cluster::new(c).ok()).map_or_else(|| names.server_secret(), |c| pod::server_secret(&c));
    let ca = secret_key(secrets.get_opt(&server_secret).await?.as_ref(), "ca.crt");
    let token = secret_key(secrets.get_opt(&names.token_secret()).await?.as_ref(), "token");
    let tls = match ca {
        Some(pem) => instances::tls_config(&pem),
        None => Err(format!("Secret {server_secret} holds no ca.crt to verify the instances with")),
    };
    Ok(Trust { tls, token })
}

/// Instance `name`'s Pod uid and where its API is, or why it cannot be reached.
async fn instance_target(
    client: &kube::Client,
    names: &Names,
    trust: &Trust,
    name: &str,
) -> Result<(Option<String>, Option<Target>), kube::Error> {
    let pod = Api::<Pod>::namespaced(client.clone(), &names.namespace).get_opt(name).await?;
    let uid = pod.as_ref().and_then(|p| p.metadata.uid.clone());
    let ip: Option<IpAddr> =
        pod.as_ref().and_then(|p| p.status.as_ref()).and_then(|s| s.pod_ip.as_ref()).and_then(|ip| ip.parse().ok());
    let target = match (names.instance_number(name), ip, &trust.tls) {
        (Some(n), Some(ip), Ok(tls)) => Some(Target {
            name: name.to_owned(),
            addr: SocketAddr::new(ip, API_PORT as u16),
            host: names.instance_host(n),
            tls: tls.clone(),
            token: trust.token.clone(),
        }),
        _ => None,
    };
    Ok((uid, target))
}

/// Instance `name` as a pass sees it, and its address.
async fn instance(
    client: &kube::Client,
    api: &dyn InstanceApi,
    names: &Names,
    trust: &Trust,
    name: &str,
) -> Result<(InstanceSeen, Option<Target>), kube::Error> {
    let (pod_uid, target) = instance_target(client, names, trust, name).await?;
    let answer = match (&pod_uid, &target, &trust.tls) {
        (None, _, _) => Err(format!("there is no Pod {name}")),
        (_, Some(t), _) => view(api, t).await,
        (_, None, Err(e)) => Err(e.clone()),
        (_, None, Ok(_)) if names.instance_number(name).is_none() => {
            Err(format!("{name} is not an instance of {}", names.cluster))
        }
        (_, None, Ok(_)) => Err(format!("the Pod {name} has no IP yet")),
    };
    Ok((InstanceSeen { name: name.to_owned(), pod_uid, answer }, target))
}

/// `GET path` of `target`: the document, or why not.
async fn get<T: serde::de::DeserializeOwned>(
    api: &dyn InstanceApi,
    target: &Target,
    path: &str,
    timeout: std::time::Duration,
) -> Result<T, String> {
    let answer: Answer = api.request(target, http::Method::GET, path, None, timeout).await?;
    if !answer.status.is_success() {
        return Err(answer.refusal(&target.name, path));
    }
    serde_json::from_value(answer.body)
        .map_err(|e| format!("{} answered GET {path} with an unexpected document: {e}", target.name))
}

/// What an instance's `/status` says about backups.
async fn view(api: &dyn InstanceApi, target: &Target) -> Result<InstanceView, String> {
    let status: InstanceStatus = get(api, target, "/status", CALL_TIMEOUT).await?;
    let backup = status.backup.unwrap_or_default();
    let archive_failing = status.archive.as_ref().and_then(crate::reconcile::archiving::failing);
    Ok(InstanceView {
        is_primary: status.in_recovery == Some(false),
        running: backup.running,
        last_failure: backup.last_failure.zip(backup.last_failed_at),
        archive_failing,
    })
}

/// The store's catalog, as `target` lists it.
async fn catalog(api: &dyn InstanceApi, target: &Target) -> Result<Catalog, String> {
    // Listing reads the store: as long as a control call, not a status read.
    let list: BackupList = get(api, target, "/backups", CONTROL_TIMEOUT).await?;
    Ok(Catalog { destination: list.destination, backups: list.backups })
}
