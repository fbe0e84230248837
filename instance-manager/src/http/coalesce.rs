//! Concurrent requests for the same document share one computation ([`SingleFlight`]).
//!
//! `/status`, `/primary`, `/replica` and `/readyz` ask Postgres over the manager's cached
//! connection — the one the HA loop observes Postgres with. Without sharing, 2,000 concurrent
//! `/status` queued 2,000 queries on it, and the HA loop's own observation waited behind them.
//! Now a request that arrives while the document is being computed waits for that
//! computation and answers with its result: at most one query per kind is in flight for the
//! API, however many clients ask, and every answer is at most one computation old (a few
//! milliseconds). The computation runs as a task of its own, so clients that give up do not
//! cancel it for the others.
//!
//! `POST /ha/tick` wake-ups are limited the same way: one per [`TICK_INTERVAL`] at most.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::api::InstanceStatus;
use crate::instance::Instance;

/// One computation of a `T` at a time; callers during it share its result.
pub struct SingleFlight<T: Clone> {
    flight: Mutex<Option<Shared<BoxFuture<'static, Option<T>>>>>,
}

impl<T: Clone> Default for SingleFlight<T> {
    fn default() -> Self {
        Self { flight: Mutex::new(None) }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// The result of the computation in flight, or of a new one started with `start`. `None`
    /// only when the computation's task panicked.
    pub async fn get<Fut>(&self, start: impl FnOnce() -> Fut) -> Option<T>
    where
        Fut: Future<Output = T> + Send + 'static,
    {
        let flight = {
            let mut slot = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some(f) if f.peek().is_none() => f.clone(),
                _ => {
                    let task = tokio::spawn(start());
                    let f = async move { task.await.ok() }.boxed().shared();
                    *slot = Some(f.clone());
                    f
                }
            }
        };
        flight.await
    }
}

/// At most one wake-up of the HA loop by `POST /ha/tick` per this interval.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether a wake-up may go through at `now`, the last one having gone through at `last`.
pub fn tick_due(last: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= interval)
}

/// The shared computations of one instance's API (a request extension), and the rate of
/// `/ha/tick` wake-ups.
#[derive(Clone)]
pub struct Coalesced {
    instance: Arc<Instance>,
    status: Arc<SingleFlight<InstanceStatus>>,
    /// Readiness with its reason ([`Instance::readiness`]): text for a person, not an error.
    readiness: Arc<SingleFlight<Result<(), String>>>,
    last_tick: Arc<Mutex<Option<Instant>>>,
}

impl Coalesced {
    /// For `instance`.
    pub fn new(instance: Arc<Instance>) -> Self {
        Self { instance, status: Arc::default(), readiness: Arc::default(), last_tick: Arc::default() }
    }

    /// Whether a `/ha/tick` may wake the HA loop now (and if so, counts it).
    pub fn admit_tick(&self) -> bool {
        let mut last = self.last_tick.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let due = tick_due(*last, now, TICK_INTERVAL);
        if due {
            *last = Some(now);
        }
        due
    }

    /// [`Instance::status`], shared.
    pub async fn status(&self) -> InstanceStatus {
        let instance = Arc::clone(&self.instance);
        match self.status.get(|| async move { instance.status().await }).await {
            Some(s) => s,
            None => self.instance.status().await,
        }
    }

    /// [`Instance::readiness`], shared; `Err` is the reason `/readyz` shows.
    pub async fn readiness(&self) -> Result<(), String> {
        let instance = Arc::clone(&self.instance);
        self.readiness
            .get(|| async move { instance.readiness().await })
            .await
            .unwrap_or_else(|| Err("the readiness check failed; see the manager's log".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn ticks_are_let_through_once_per_interval() {
        let t0 = Instant::now();
        let i = Duration::from_secs(1);
        assert!(tick_due(None, t0, i));
        assert!(!tick_due(Some(t0), t0 + Duration::from_millis(999), i));
        assert!(tick_due(Some(t0), t0 + i, i));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_computation_and_later_ones_start_another() {
        let flight = Arc::new(SingleFlight::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |flight: Arc<SingleFlight<usize>>, runs: Arc<AtomicUsize>| async move {
            flight
                .get(|| async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    runs.fetch_add(1, Ordering::SeqCst) + 1
                })
                .await
        };
        let together: Vec<_> = (0..50).map(|_| tokio::spawn(call(Arc::clone(&flight), Arc::clone(&runs)))).collect();
        for t in together {
            assert_eq!(t.await.unwrap(), Some(1));
        }
        assert_eq!(call(Arc::clone(&flight), Arc::clone(&runs)).await, Some(2), "a later caller gets a fresh result");
    }
}
