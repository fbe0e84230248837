//! Scheduled base backups: a cron expression evaluated in UTC. Pure; the lease holder's
//! loop asks [`next_after`] when the next backup is due.

use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

/// A schedule that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{expr:?} is not a cron expression: {source}")]
pub struct ScheduleError {
    /// The expression as given.
    pub expr: String,
    /// What the cron parser refused.
    source: croner::errors::CronError,
}

/// Parses a cron expression (`min hour day month weekday`, optionally with seconds first).
pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
    expr.parse::<Cron>().map(Schedule).map_err(|source| ScheduleError { expr: expr.to_string(), source })
}

impl Schedule {
    /// The first time strictly after `t` the schedule fires.
    pub fn next_after(&self, t: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let zoned = t.to_zoned(jiff::tz::TimeZone::UTC);
        self.0.find_next_occurrence(&zoned, false).ok().map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn daily_at_three_utc() {
        let s = parse("0 3 * * *").unwrap();
        let t: jiff::Timestamp = "2026-11-30T02:59:00Z".parse().unwrap();
        assert_eq!(s.next_after(t).unwrap().to_string(), "2026-11-30T03:00:00Z");
        let t: jiff::Timestamp = "2026-11-30T03:00:00Z".parse().unwrap();
        assert_eq!(s.next_after(t).unwrap().to_string(), "2026-12-01T03:00:00Z");
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "every day", "61 * * * *", "* * *"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
