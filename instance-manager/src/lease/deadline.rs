//! Per-call deadlines for lease operations.
//!
//! These bound how long one call may take, on tokio's timer (`CLOCK_MONOTONIC`). They are not
//! the safety deadline: the renew deadline is checked by the HA state machine on
//! `CLOCK_BOOTTIME` (see [`crate::clock`]), so a suspension that makes these timers fire late is
//! still seen as lateness there.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{LeaseError, Result};

/// How long to wait after a 429 that did not say (`Retry-After` absent).
const DEFAULT_RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(500);

/// The shortest wait after a 429, so a `Retry-After: 0` cannot spin.
const MIN_RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(50);

/// Runs `fut`, giving up with [`LeaseError::Timeout`] after `deadline`. The abandoned
/// operation is dropped; a write may still land (see [`LeaseError::outcome_unknown`]).
pub async fn with_deadline<T>(fut: impl Future<Output = Result<T>>, deadline: Duration) -> Result<T> {
    tokio::time::timeout(deadline, fut).await.unwrap_or(Err(LeaseError::Timeout(deadline)))
}

/// Runs `op`, retrying it after [`LeaseError::RateLimited`] (HTTP 429) as long as the wait the
/// store asked for (`Retry-After`, 500 ms if unsaid) ends before `deadline` from now. Each
/// attempt is itself bounded by what is left of the deadline, so the whole never runs past it.
///
/// Only 429 is retried: the server refused the request without processing it, so repeating
/// it is safe. Every other outcome, [`LeaseError::Conflict`] above all, is returned as is.
/// When the next retry would end past the deadline, the last 429 is returned; when the
/// deadline runs out during an attempt, [`LeaseError::Timeout`] with the whole `deadline`.
pub async fn retry_rate_limited<T, F, Fut>(mut op: F, deadline: Duration) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let end = start.checked_add(deadline);
    // A deadline too far to represent is no deadline for the retries; each attempt still gets it.
    let remaining = || end.map_or(deadline, |end| end.saturating_duration_since(Instant::now()));
    loop {
        let left = remaining();
        if left.is_zero() {
            return Err(LeaseError::Timeout(deadline));
        }
        match with_deadline(op(), left).await {
            Err(LeaseError::Timeout(_)) => return Err(LeaseError::Timeout(deadline)),
            Err(LeaseError::RateLimited { retry_after }) => {
                let wait = retry_after.unwrap_or(DEFAULT_RATE_LIMIT_BACKOFF).max(MIN_RATE_LIMIT_BACKOFF);
                // The retry needs time of its own after the wait: wait only if some is left.
                if wait >= remaining() {
                    return Err(LeaseError::RateLimited { retry_after });
                }
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn with_deadline_maps_elapsed_to_timeout() {
        let hung = std::future::pending::<Result<()>>();
        assert_eq!(with_deadline(hung, secs(3)).await, Err(LeaseError::Timeout(secs(3))));
        assert_eq!(with_deadline(async { Ok(7) }, secs(3)).await, Ok(7));
        let conflict = async { Err::<(), _>(LeaseError::Conflict) };
        assert_eq!(with_deadline(conflict, secs(3)).await, Err(LeaseError::Conflict));
    }

    /// An operation answering 429 `answers` times with `retry_after`, then `Ok(attempt)`.
    fn throttled(
        answers: u32,
        retry_after: Option<Duration>,
        calls: &AtomicU32,
    ) -> impl FnMut() -> std::future::Ready<Result<u32>> + '_ {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            std::future::ready(if n <= answers { Err(LeaseError::RateLimited { retry_after }) } else { Ok(n) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_429_honouring_retry_after() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = retry_rate_limited(throttled(2, Some(secs(1)), &calls), secs(10)).await;
        assert_eq!(result, Ok(3));
        assert_eq!(start.elapsed(), secs(2), "waited Retry-After twice");
    }

    #[tokio::test(start_paused = true)]
    async fn never_waits_past_the_deadline() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let result = retry_rate_limited(throttled(10, Some(secs(2)), &calls), secs(5)).await;
        // t=0 429, wait to 2; t=2 429, wait to 4; t=4 429: waiting to 6 would pass 5.
        assert_eq!(result, Err(LeaseError::RateLimited { retry_after: Some(secs(2)) }));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn missing_retry_after_uses_default_backoff_and_zero_cannot_spin() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        assert_eq!(retry_rate_limited(throttled(1, None, &calls), secs(2)).await, Ok(2));
        assert_eq!(start.elapsed(), DEFAULT_RATE_LIMIT_BACKOFF);

        let calls = AtomicU32::new(0);
        let result = retry_rate_limited(throttled(u32::MAX, Some(Duration::ZERO), &calls), secs(1)).await;
        assert!(matches!(result, Err(LeaseError::RateLimited { .. })), "{result:?}");
        assert!(calls.load(Ordering::SeqCst) <= 21, "spun {} times", calls.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        for error in [LeaseError::Conflict, LeaseError::Unavailable { message: "down".into() }] {
            let calls = AtomicU32::new(0);
            let op = || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(Err::<(), _>(error.clone()))
            };
            assert_eq!(retry_rate_limited(op, secs(10)).await, Err(error.clone()));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_is_cut_at_the_deadline() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let op = || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(LeaseError::RateLimited { retry_after: Some(secs(1)) })
                } else {
                    std::future::pending().await
                }
            }
        };
        assert_eq!(retry_rate_limited(op, secs(4)).await, Err::<(), _>(LeaseError::Timeout(secs(4))));
        assert_eq!(start.elapsed(), secs(4));
    }
}
