//! Structured shutdown: every long-lived task of `instance-manager run` is spawned through
//! one [`Tasks`], created in `main`, which holds a cancellation token and a task tracker.
//! When the run loop has stopped Postgres, `main` calls [`Tasks::shutdown`]: the token is
//! cancelled, every task ends (at its next await point, or on its own terms when it watches
//! the token), and the manager logs that they did — or names those that did not, within a
//! grace period — before it exits. Nothing is spawned and forgotten.
//!
//! Short-lived work (one upload, one SQL connection's driver) may still use `tokio::spawn`:
//! it ends by itself, and the tasks that start it end on the token.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The manager's long-lived tasks and the token that ends them. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
    live: Arc<Mutex<BTreeMap<u64, &'static str>>>,
    next: Arc<AtomicU64>,
}

/// Removes a task's name from the live set when the task ends, however it ends.
struct Registered {
    live: Arc<Mutex<BTreeMap<u64, &'static str>>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

impl Tasks {
    /// No tasks yet, not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token: cancelled when the manager shuts down. Loops that must finish their
    /// current step (the HA loop) watch it themselves.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    fn register(&self, name: &'static str) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.live.lock().unwrap_or_else(PoisonError::into_inner).insert(id, name);
        Registered { live: Arc::clone(&self.live), id }
    }

    /// Spawns a task that runs until it returns or the manager shuts down, whichever comes
    /// first (it is dropped at its current await point then).
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let registered = self.register(name);
        let token = self.token.clone();
        self.tracker.spawn(async move {
            let _registered = registered;
            tokio::select! {
                () = token.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Tracks work that ends on the token by itself (a loop on another thread, which finishes
    /// its step and then signals `done`): shutdown waits for it.
    pub fn track_until<F>(&self, name: &'static str, done: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let registered = self.register(name);
        self.tracker.spawn(async move {
            let _registered = registered;
            done.await;
        });
    }

    /// The names of the tasks still running.
    pub fn running(&self) -> Vec<&'static str> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).values().copied().collect()
    }

    /// Cancels the token and waits up to `grace` for every task to end; returns the names of
    /// those still running then (empty: a clean shutdown).
    pub async fn shutdown(&self, grace: Duration) -> Vec<&'static str> {
        self.token.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_ok() {
            return Vec::new();
        }
        self.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_task_ends_on_shutdown_and_one_that_does_not_is_named() {
        let tasks = Tasks::new();
        tasks.spawn("forever", std::future::pending());
        let token = tasks.token().clone();
        let (finished_tx, finished) = tokio::sync::oneshot::channel();
        tasks.track_until("graceful", async move {
            token.cancelled().await;
            let _ = finished_tx.send(());
        });
        assert_eq!(tasks.running().len(), 2);
        assert!(tasks.shutdown(Duration::from_secs(5)).await.is_empty());
        assert!(finished.await.is_ok(), "the graceful task saw the cancellation");
        assert!(tasks.running().is_empty());

        let stuck = Tasks::new();
        stuck.track_until("stuck", std::future::pending());
        assert_eq!(stuck.shutdown(Duration::from_millis(100)).await, vec!["stuck"]);
    }
}
