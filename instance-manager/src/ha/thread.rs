//! Where the HA loop runs: an OS thread of its own (`pgwarden-ha`) with its own current-thread
//! Tokio runtime, apart from the runtime that serves the API, the metrics, the archive and the
//! backups.
//!
//! # Why a thread of its own
//! The renew must never wait for anything the rest of the manager does. On the shared
//! runtime, thousands of API requests (or a burst of archive work) queue their tasks before
//! the loop's timer task: measured before this change, 3 × 2,000 concurrent `/status` and
//! `/metrics` delayed the renews past the renew deadline and the deadman killed Postgres.
//! On its own thread the loop is scheduled by the kernel like any other thread, whatever the
//! number of tasks elsewhere, and everything the loop creates lives on its runtime too: the
//! lease store (the Kubernetes client's connection tasks, the file store's blocking reads),
//! the routing task, the peers' HTTP connections, the deadman's pipe.
//!
//! The other way round — the HTTP servers on a runtime of their own — was not chosen: the
//! handlers of `wal.sock` start archive uploads, which would then run on the API's runtime,
//! and the loop would still share its runtime with the archive, backups and the supervisor.
//!
//! What the loop still shares: the instance's state (locks held for microseconds) and the
//! cached Postgres connection of `Instance::observe`, which the API's `/status` uses too
//! (its requests are coalesced, see `http::routes::status`, so at most one such query waits
//! before the loop's).

use std::sync::Arc;

use crate::instance::Instance;
use crate::supervisor::Supervisor;

/// Why the HA loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The lease store could not be opened.
    #[error("cannot open the lease store: {0}")]
    Open(#[from] super::OpenError),
    /// The deadman could not be started.
    #[error("cannot start the deadman: {0}")]
    Deadman(#[from] crate::supervisor::Error),
    /// The loop's thread or runtime could not be started.
    #[error("{0}")]
    Thread(String),
}

/// Opens the lease store, starts the deadman and the HA loop on the `pgwarden-ha` thread; returns
/// once the loop runs (or why it could not start). The loop ends on `tasks`' token.
pub async fn start(sup: &Supervisor, instance: &Arc<Instance>, tasks: &crate::tasks::Tasks) -> Result<(), StartError> {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    // Shutdown waits for the loop to finish its tick and its thread to end.
    let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
    tasks.track_until("ha loop", async move {
        let _ = ended.await;
    });
    let stop = tasks.token().clone();
    let (sup, instance) = (sup.clone(), Arc::clone(instance));
    std::thread::Builder::new()
        .name("pgwarden-ha".into())
        .spawn(move || {
            let runtime =
                match tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(8).build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx
                            .send(Err(StartError::Thread(format!("cannot start the HA loop's runtime: {e}"))));
                        return;
                    }
                };
            runtime.block_on(async move {
                match prepare(&sup, &instance).await {
                    Ok(ha) => {
                        let _ = started_tx.send(Ok(()));
                        ha.run(stop).await;
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            });
            drop(ended_tx);
        })
        .map_err(|e| StartError::Thread(format!("cannot start the HA loop's thread: {e}")))?;
    started
        .await
        .unwrap_or_else(|_| Err(StartError::Thread("the HA loop's thread ended before the loop started".into())))
}

/// The lease store, the deadman and the loop, created on the loop's own runtime.
async fn prepare(sup: &Supervisor, instance: &Arc<Instance>) -> Result<super::HaLoop, StartError> {
    let v = instance.config();
    let store = super::open_store(&v).await?;
    let deadman = super::deadman::Deadman::spawn(sup)?;
    tracing::info!(store = %store.describe(), "leader election through the lease (on its own thread)");
    let routing = super::open::open_routing(&v).await;
    tracing::info!(routing = %routing.describe(), "routing");
    Ok(super::HaLoop::new(Arc::clone(instance), store, sup.clone(), Some(deadman)).with_routing(routing))
}
