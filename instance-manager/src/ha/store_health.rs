//! Saying it when the lease store does not answer: a WARN line from the first failed call,
//! then one every [`REPEAT`] while it lasts, and one INFO line when it answers again — never
//! a line per tick, never silence.

use std::time::Duration;

use crate::clock::BootInstant;

/// How often a store that keeps failing is logged again.
pub const REPEAT: Duration = Duration::from_secs(30);

/// The lease store's health as the HA loop sees it.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing_since: Option<BootInstant>,
    last_logged: Option<BootInstant>,
    last_message: Option<String>,
}

impl StoreHealth {
    /// A call failed with `message` (`holding`: we hold the lease, the failure is a renew that
    /// could not be made).
    /// A refusal that retrying cannot fix (`fatal`, e.g. a 403) is logged at ERROR.
    pub fn failed(&mut self, now: BootInstant, store: &str, message: &str, holding: bool, fatal: bool) {
        let since = *self.failing_since.get_or_insert(now);
        let changed = self.last_message.as_deref() != Some(message) && self.last_logged.is_none();
        let due = self.last_logged.is_none_or(|t| now.duration_since(t) >= REPEAT);
        if changed || due {
            let failing_for_s = now.duration_since(since).as_secs_f64();
            if fatal {
                tracing::error!(store, error = message, failing_for_s, holding, "the lease store refuses our requests");
            } else {
                tracing::warn!(store, error = message, failing_for_s, holding, "the lease store does not answer");
            }
            self.last_logged = Some(now);
        }
        self.last_message = Some(message.to_string());
    }

    /// A call succeeded.
    pub fn answered(&mut self, now: BootInstant) {
        if let Some(since) = self.failing_since.take() {
            let failed_for_s = now.duration_since(since).as_secs_f64();
            tracing::info!(failed_for_s, "the lease store answers again");
        }
        self.last_logged = None;
        self.last_message = None;
    }

    /// For how long the store has been failing, if it is.
    pub fn failing_for(&self, now: BootInstant) -> Option<Duration> {
        self.failing_since.map(|t| now.duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn failing_is_remembered_until_the_store_answers() {
        let t0 = BootInstant::now();
        let at = |s| t0.checked_add(Duration::from_secs(s)).unwrap();
        let mut h = StoreHealth::default();
        assert_eq!(h.failing_for(t0), None);
        h.failed(t0, "file x", "timeout", true, false);
        h.failed(at(2), "file x", "timeout", true, false);
        assert_eq!(h.failing_for(at(4)), Some(Duration::from_secs(4)), "counted from the first failure");
        h.answered(at(5));
        assert_eq!(h.failing_for(at(6)), None);
    }
}
