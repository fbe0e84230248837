//! Lease timing and its validation (docs/architecture.md §4.2).
//!
//! The inequalities are what makes "one writer" hold:
//! - `retryPeriod·1.2 < renewDeadline`: a holder gets at least one retry (with jitter) of a
//!   failed renew before it must fence;
//! - `renewDeadline + fenceBudget < leaseDuration`: a holder that stopped renewing has fenced
//!   (within its fence budget) before anyone else may see the lease expire and promote.
//!
//! `leaseDuration` must be a whole number of seconds because it is published in the Lease's
//! integer `leaseDurationSeconds`, which other members read; the other three may be fractional.

use std::time::Duration;

/// Timing of the lease loop. Configuration names its fields `lease.<field>Seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease stays valid after a renew (`lease.leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long the holder keeps Postgres writable without a successful renew, measured from
    /// the send of the last successful one (`lease.renewDeadlineSeconds`).
    pub renew_deadline: Duration,
    /// The period of the lease loop (`lease.retryPeriodSeconds`).
    pub retry_period: Duration,
    /// The time allowed to stop a fenced Postgres, SIGKILL included (`lease.fenceBudgetSeconds`).
    pub fence_budget: Duration,
}

impl Default for LeaseTiming {
    /// The configuration's defaults (`crate::api::DEFAULT_*`): client-go's 15 s / 10 s / 2 s,
    /// and a 2 s fence budget.
    fn default() -> Self {
        Self {
            lease_duration: crate::api::DEFAULT_LEASE_DURATION,
            renew_deadline: crate::api::DEFAULT_RENEW_DEADLINE,
            retry_period: crate::api::DEFAULT_RETRY_PERIOD,
            fence_budget: crate::api::DEFAULT_FENCE_BUDGET,
        }
    }
}

impl LeaseTiming {
    /// The smallest fence budget accepted.
    pub const MIN_FENCE_BUDGET: Duration = Duration::from_secs(1);

    /// Builds a timing from configuration values in seconds and validates it, reporting every
    /// problem at once (negative, NaN or infinite values included).
    pub fn from_seconds(
        lease_duration: f64,
        renew_deadline: f64,
        retry_period: f64,
        fence_budget: f64,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut convert = |field: &str, secs: f64| {
            Duration::try_from_secs_f64(secs).unwrap_or_else(|_| {
                errors.push(format!("lease.{field} is {secs} but must be a non-negative number of seconds"));
                Duration::ZERO
            })
        };
        let timing = Self {
            lease_duration: convert("leaseDurationSeconds", lease_duration),
            renew_deadline: convert("renewDeadlineSeconds", renew_deadline),
            retry_period: convert("retryPeriodSeconds", retry_period),
            fence_budget: convert("fenceBudgetSeconds", fence_budget),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        timing.validate().map(|()| timing)
    }

    /// Checks the inequalities of docs/architecture.md §4.2. Each message names the field and the fix.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let (lease, renew, retry, fence) =
            (secs(self.lease_duration), secs(self.renew_deadline), secs(self.retry_period), secs(self.fence_budget));
        if self.fence_budget < Self::MIN_FENCE_BUDGET {
            errors.push(format!(
                "lease.fenceBudgetSeconds is {fence} but must be at least 1 (the time to stop Postgres, \
                 SIGKILL included): raise lease.fenceBudgetSeconds to 1 or more"
            ));
        }
        if self.retry_period.is_zero() {
            errors.push("lease.retryPeriodSeconds is 0 but must be greater than 0: set it to e.g. 2".to_string());
        }
        // retry·1.2 < renew, in exact integer arithmetic: retry·6 < renew·5.
        if self.retry_period.as_nanos() * 6 >= self.renew_deadline.as_nanos() * 5 {
            errors.push(format!(
                "lease.renewDeadlineSeconds ({renew}) must be greater than 1.2 × lease.retryPeriodSeconds \
                 ({retry}), so a failed renew is retried before the holder fences: raise \
                 lease.renewDeadlineSeconds above {} or lower lease.retryPeriodSeconds below {}",
                round3(retry * 1.2),
                round3(renew / 1.2),
            ));
        }
        let fenced_by = self.renew_deadline.checked_add(self.fence_budget);
        if fenced_by.is_none_or(|f| f >= self.lease_duration) {
            errors.push(format!(
                "lease.leaseDurationSeconds ({lease}) must be greater than lease.renewDeadlineSeconds + \
                 lease.fenceBudgetSeconds ({renew} + {fence} = {}), so a stale primary has stopped before \
                 its lease can expire: raise lease.leaseDurationSeconds or lower lease.renewDeadlineSeconds",
                round3(renew + fence),
            ));
        }
        if self.lease_duration.subsec_nanos() != 0 {
            errors.push(format!(
                "lease.leaseDurationSeconds ({lease}) must be a whole number of seconds (it is published in \
                 the Lease's integer leaseDurationSeconds): use {}",
                self.lease_duration.as_secs().saturating_add(1),
            ));
        }
        if self.lease_duration.as_secs() > u64::from(i32::MAX.unsigned_abs()) {
            errors.push(format!("lease.leaseDurationSeconds ({lease}) is too large: use at most {}", i32::MAX));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// `lease_duration` in whole seconds as published in the lease record (rounded up,
    /// saturating; [`validate`](Self::validate) guarantees it is exact).
    pub fn lease_duration_seconds(&self) -> u32 {
        let whole = self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        u32::try_from(whole).unwrap_or(u32::MAX)
    }
}

fn secs(d: Duration) -> f64 {
    round3(d.as_secs_f64())
}

/// Rounds to milliseconds for messages, so `1.2 × 3` prints as `3.6`, not `3.5999999999999996`.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn timing(lease: u64, renew: u64, retry: u64, fence: u64) -> LeaseTiming {
        LeaseTiming {
            lease_duration: ms(lease),
            renew_deadline: ms(renew),
            retry_period: ms(retry),
            fence_budget: ms(fence),
        }
    }

    fn errors(t: LeaseTiming) -> Vec<String> {
        t.validate().expect_err("timing should be invalid")
    }

    #[test]
    fn defaults_are_valid() {
        let t = LeaseTiming::default();
        assert_eq!(t, timing(15_000, 10_000, 2_000, 2_000));
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.lease_duration_seconds(), 15);
    }

    #[test]
    fn fast_profile_is_valid() {
        assert_eq!(timing(5_000, 3_000, 1_000, 1_500).validate(), Ok(()));
        assert_eq!(LeaseTiming::from_seconds(5.0, 3.0, 1.0, 1.5), Ok(timing(5_000, 3_000, 1_000, 1_500)));
    }

    #[test]
    fn small_fence_budget_is_reported() {
        let e = errors(timing(15_000, 10_000, 2_000, 500));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("lease.fenceBudgetSeconds is 0.5") && e[0].contains("at least 1"), "{e:?}");
    }

    #[test]
    fn retry_period_too_close_to_renew_deadline_is_reported() {
        // 2.5·1.2 = 3 is not < 3: the boundary itself is rejected.
        let e = errors(timing(6_000, 3_000, 2_500, 1_000));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("lease.renewDeadlineSeconds (3) must be greater than 1.2"), "{e:?}");
        assert!(e[0].contains("above 3") && e[0].contains("below 2.5"), "{e:?}");
        assert_eq!(timing(6_000, 3_000, 2_499, 1_000).validate(), Ok(()));
    }

    #[test]
    fn renew_plus_fence_not_below_lease_is_reported() {
        let e = errors(timing(5_000, 3_000, 1_000, 2_000));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("lease.leaseDurationSeconds (5) must be greater than"), "{e:?}");
        assert!(e[0].contains("(3 + 2 = 5)"), "{e:?}");
    }

    #[test]
    fn zero_retry_and_fractional_lease_are_reported() {
        let e = errors(timing(15_500, 10_000, 0, 2_000));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("lease.retryPeriodSeconds is 0"), "{e:?}");
        assert!(e[1].contains("whole number") && e[1].contains("use 16"), "{e:?}");
        assert_eq!(timing(15_500, 10_000, 0, 2_000).lease_duration_seconds(), 16);
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let e = errors(timing(2_000, 2_000, 2_000, 500));
        assert_eq!(e.len(), 3, "{e:?}");
        for field in ["fenceBudgetSeconds", "renewDeadlineSeconds", "leaseDurationSeconds"] {
            assert!(e.iter().any(|m| m.starts_with(&format!("lease.{field}"))), "{field} missing in {e:?}");
        }
    }

    #[test]
    fn from_seconds_rejects_negative_and_nan() {
        let e = LeaseTiming::from_seconds(-1.0, f64::NAN, 2.0, 2.0).expect_err("invalid");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("lease.leaseDurationSeconds is -1"), "{e:?}");
        assert!(e[1].starts_with("lease.renewDeadlineSeconds is NaN"), "{e:?}");
    }
}
