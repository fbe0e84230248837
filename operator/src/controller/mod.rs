//! The operator's runtime: leader election, the controller, the HTTP endpoints and shutdown,
//! wired together by [`Operator::run`].
//!
//! ```text
//!  start ──▶ standby ──(lease acquired)──▶ leader: reconciling ──(SIGTERM)──▶ draining ──▶ release ──▶ exit 0
//!              │                               │                                │
//!              └──(SIGTERM)──▶ exit 0          └──(lease lost)──▶ abort reconciles, exit 3
//! ```
//!
//! - [`leader`]: the election on the operator's own Lease; only the leader runs the
//!   controller, so two replicas never reconcile at once.
//! - [`reconciler`]: the kube-runtime controller on `PostgresCluster` and what it owns, the
//!   measured reconcile and the per-cluster error backoff ([`backoff`]).
//! - [`backups`]: the second controller, on `PostgresBackup`, run by the same leader.
//! - [`metrics`], [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`signals`]: SIGTERM/SIGINT. The first drains: no new reconciles, those in flight finish
//!   (for at most [`SHUTDOWN_GRACE`]), the lease is released so that the standby takes over at
//!   once. The second exits immediately.
//!
//! A leader that loses its lease drops the controller at once (in-flight reconciles are
//! aborted at their next await) and the process exits with [`Exit::LostLeadership`]: Kubernetes
//! restarts it as a fresh standby, with no state from its time as leader.

mod backoff;
mod backups;
pub mod http;
pub mod leader;
pub mod metrics;
mod reconciler;
pub mod signals;

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use backups::BackupReconciler;
use leader::{Election, Elector, End, LeaseSettings, Snapshot};
use metrics::Metrics;
use reconciler::Reconciler;

/// How long in-flight reconciles may run after a shutdown signal before they are aborted:
/// well within Kubernetes' default 30 s grace period, leaving time to release the lease.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// How long the HTTP server may take to close its connections at exit.
const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the runtime needs besides the API client.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace whose clusters are reconciled; `None`: every namespace.
    pub namespace: Option<String>,
    /// The leader election.
    pub lease: LeaseSettings,
}

/// How the operator stopped; [`Exit::code`] is the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shut down on a signal, after releasing the lease if it was held.
    Stopped,
    /// The leader lease was lost; the process must restart as a standby.
    LostLeadership(String),
    /// The runtime could not go on.
    Failed(String),
}

impl Exit {
    /// 0 when stopped, 3 when leadership was lost, 1 on a failure (2 is a refused command line).
    pub fn code(&self) -> u8 {
        match self {
            Self::Stopped => 0,
            Self::Failed(_) => 1,
            Self::LostLeadership(_) => 3,
        }
    }
}

/// The operator with its HTTP listener bound; [`Operator::run`] runs it.
#[derive(Debug)]
pub struct Operator {
    listener: TcpListener,
    settings: Settings,
}

impl Operator {
    /// Binds the HTTP listener on `listen` (port 0: any free port).
    pub async fn bind(listen: SocketAddr, settings: Settings) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(listen).await?, settings })
    }

    /// The address the HTTP endpoints listen on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs until `shutdown` is cancelled (then drains, releases the lease and returns
    /// [`Exit::Stopped`]) or the lease is lost.
    pub async fn run(self, client: kube::Client, shutdown: CancellationToken) -> Exit {
        let Self { listener, settings } = self;
        let metrics = Arc::new(Metrics::new());
        let (elector, election) = Elector::new(client.clone(), settings.lease.clone());
        let (synced_tx, synced_rx) = watch::channel(false);
        let health = http::Health {
            election: election.clone(),
            synced: synced_rx,
            stopping: shutdown.clone(),
            // A tick lasts at most two calls and a retry period; twice the lease is ample.
            stale_after: settings.lease.timings.lease_duration * 2,
        };
        let http_stop = CancellationToken::new();
        let http_task = tokio::spawn(http::serve(listener, http::router(health, metrics.clone()), http_stop.clone()));
        let stop_election = CancellationToken::new();
        let election_task = tokio::spawn(elector.run(stop_election.clone()));

        let mut watching = election;
        let exit = match wait_for_leadership(&mut watching, &shutdown).await {
            Some(exit) => exit,
            None => {
                metrics.set_leader(true);
                let leading = Leading { client, settings: &settings, metrics: metrics.clone(), synced: synced_tx };
                let exit = leading.reconcile(&mut watching, &shutdown).await;
                metrics.set_leader(false);
                exit
            }
        };
        // The controller is gone (drained or aborted): only now may the lease be released.
        stop_election.cancel();
        let exit = match (exit, election_task.await) {
            (exit, Ok(_)) => exit,
            (Exit::Stopped, Err(e)) => Exit::Failed(format!("the leader election task failed: {e}")),
            (exit, Err(_)) => exit,
        };
        http_stop.cancel();
        if tokio::time::timeout(HTTP_CLOSE_GRACE, http_task).await.is_err() {
            tracing::debug!("HTTP connections still open at exit; closing them");
        }
        match &exit {
            Exit::Stopped => tracing::info!("operator stopped"),
            Exit::LostLeadership(why) => tracing::error!(reason = %why,
                "stopped reconciling: the leader lease was lost; exiting with code 3 so that Kubernetes \
                 restarts this replica as a standby"),
            Exit::Failed(why) => tracing::error!(error = %why, "operator failed"),
        }
        exit
    }
}

/// Waits until this replica leads (`None`) or must stop (`Some`: how).
async fn wait_for_leadership(election: &mut watch::Receiver<Snapshot>, shutdown: &CancellationToken) -> Option<Exit> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Some(Exit::Stopped),
        state = election.wait_for(|s| matches!(s.election, Election::Leader | Election::Ended(_))) => {
            match state.map(|s| s.election.clone()) {
                Ok(Election::Leader) => None,
                Ok(Election::Ended(end)) => Some(ended(end)),
                Ok(Election::Candidate { .. }) | Err(_) => Some(Exit::Failed("the leader election task ended".into())),
            }
        }
    }
}

/// The exit for an election that ended while we were not draining.
fn ended(end: End) -> Exit {
    match end {
        End::Lost(loss) => Exit::LostLeadership(loss.to_string()),
        other => Exit::Failed(format!("the leader election ended unexpectedly: {other:?}")),
    }
}

/// The leader's work: the controllers, until shutdown or the loss of the lease.
struct Leading<'a> {
    client: kube::Client,
    settings: &'a Settings,
    metrics: Arc<Metrics>,
    synced: watch::Sender<bool>,
}

impl Leading<'_> {
    async fn reconcile(self, election: &mut watch::Receiver<Snapshot>, shutdown: &CancellationToken) -> Exit {
        let namespace = self.settings.namespace.as_deref();
        let cordoned = crate::reconcile::drain::Cordoned::default();
        let clusters = reconciler::controller(&self.client, namespace, cordoned.clone())
            .graceful_shutdown_on(shutdown.clone().cancelled_owned());
        let backups =
            backups::controller(&self.client, namespace).graceful_shutdown_on(shutdown.clone().cancelled_owned());
        let (cluster_store, backup_store) = (clusters.store(), backups.store());
        let reconciler = Arc::new(Reconciler::new(self.client.clone(), self.metrics.clone(), cordoned));
        let backup_reconciler = Arc::new(BackupReconciler::new(self.client.clone(), self.metrics.clone()));
        let cluster_outcomes = clusters.run(Reconciler::reconcile, Reconciler::error_policy, reconciler.clone());
        let backup_outcomes =
            backups.run(BackupReconciler::reconcile, BackupReconciler::error_policy, backup_reconciler.clone());
        let (mut cluster_outcomes, mut backup_outcomes) = (pin!(cluster_outcomes), pin!(backup_outcomes));
        let (mut clusters_drained, mut backups_drained) = (false, false);
        // Ready once both watches have synced: a standby taking over sees every object first.
        let mut synced = pin!(async {
            let (clusters, backups) =
                futures_util::future::join(cluster_store.wait_until_ready(), backup_store.wait_until_ready()).await;
            clusters.and(backups)
        });
        let mut is_synced = false;
        let mut grace_over = pin!(async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        });
        tracing::info!(namespace = namespace.unwrap_or("(all)"), "starting the controllers");
        // Ends with both streams (drained after shutdown), the loss of the lease, or the grace.
        while !(clusters_drained && backups_drained) {
            tokio::select! {
                biased;
                state = election.wait_for(|s| matches!(s.election, Election::Ended(_))) => {
                    return match state.map(|s| s.election.clone()) {
                        Ok(Election::Ended(end)) => ended(end),
                        _ => Exit::LostLeadership("the leader election task ended".into()),
                    };
                }
                outcome = cluster_outcomes.next(), if !clusters_drained => match outcome {
                    Some(outcome) => reconciler.after(&outcome, &cluster_store),
                    None => clusters_drained = true,
                },
                outcome = backup_outcomes.next(), if !backups_drained => match outcome {
                    Some(outcome) => backup_reconciler.after(&outcome, &backup_store),
                    None => backups_drained = true,
                },
                () = &mut grace_over => {
                    tracing::warn!(grace_seconds = SHUTDOWN_GRACE.as_secs(),
                        "reconciles still running at the end of the shutdown grace; aborting them");
                    return Exit::Stopped;
                }
                ready = &mut synced, if !is_synced => {
                    is_synced = true;
                    if ready.is_ok() {
                        tracing::info!("the PostgresCluster and PostgresBackup watches have synced; reconciling");
                        self.synced.send_replace(true);
                    }
                }
            }
        }
        Exit::Stopped
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
