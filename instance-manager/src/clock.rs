//! The clock that safety deadlines are measured on.
//!
//! Every deadline that guards "one writer" (the renew deadline, the fence budget, the
//! observed-expiry wait of a candidate, docs/architecture.md §4.3 and §5) is measured on [`BootInstant`], a
//! monotonic instant read from `CLOCK_BOOTTIME`.
//!
//! Why `CLOCK_BOOTTIME` and not the alternatives:
//! - wall time (`CLOCK_REALTIME`, the Lease's `renewTime`) jumps with NTP and with operators; it
//!   is only a change detector here, never a deadline;
//! - `CLOCK_MONOTONIC` (what `std::time::Instant` and tokio's timers use) **stops while the
//!   machine or VM is suspended**. A primary frozen for 30 s by a live migration or a laptop lid
//!   would wake up believing only milliseconds passed since its last renew, while every other
//!   member saw its lease expire and elected a new primary. `CLOCK_BOOTTIME` keeps counting
//!   through suspension, so after such a pause the primary sees its renew deadline long gone and
//!   fences before doing anything else.
//!
//! Decisions take the time as an input ([`Clock`]), so tests drive a [`ManualClock`] instead of
//! sleeping.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// A point on `CLOCK_BOOTTIME`: time since boot, including time spent suspended.
///
/// Only differences between two instants are meaningful. Unlike `std::time::Instant`, nothing
/// here panics: [`duration_since`](Self::duration_since) saturates and additions are checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Duration);

impl BootInstant {
    /// Reads `CLOCK_BOOTTIME`.
    ///
    /// `CLOCK_BOOTTIME` exists on every Linux since 2.6.39 and `clock_gettime` cannot fail for
    /// it there. Should it ever be refused (an exotic kernel or seccomp profile), this falls back
    /// to `CLOCK_MONOTONIC`, which differs only in not counting suspended time; a process uses one
    /// or the other consistently since the refusal does not come and go. The last resort is
    /// `std::time::Instant`, which reads `CLOCK_MONOTONIC` too and fails loudly if it is refused:
    /// better than a clock that stands still and silently disables every deadline.
    pub fn now() -> Self {
        match clock_gettime(ClockId::CLOCK_BOOTTIME).or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC)) {
            Ok(ts) => Self::from_timespec(ts.tv_sec(), ts.tv_nsec()),
            Err(_) => Self(std_anchor().elapsed()),
        }
    }

    fn from_timespec(sec: i64, nsec: i64) -> Self {
        let sec = u64::try_from(sec).unwrap_or(0);
        let nsec = u32::try_from(nsec).unwrap_or(0);
        Self(Duration::new(sec, nsec))
    }

    /// Builds an instant this far after boot. For tests and for [`ManualClock`]; production code
    /// reads [`now`](Self::now).
    pub const fn from_since_boot(since_boot: Duration) -> Self {
        Self(since_boot)
    }

    /// How long after boot this instant is.
    pub const fn since_boot(self) -> Duration {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<BootInstant> {
        self.0.checked_add(d).map(Self)
    }

    /// `self - d`, or `None` if that would be before boot.
    pub fn checked_sub(self, d: Duration) -> Option<BootInstant> {
        self.0.checked_sub(d).map(Self)
    }

    /// The time since this instant, on the real `CLOCK_BOOTTIME` (zero if it is in the future).
    /// Code that takes a [`Clock`] should use `clock.now().duration_since(t)` instead.
    pub fn elapsed(self) -> Duration {
        BootInstant::now().duration_since(self)
    }
}

impl fmt::Debug for BootInstant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootInstant({:.3}s)", self.0.as_secs_f64())
    }
}

/// The first `std::time::Instant` this process read through the last-resort fallback of
/// [`BootInstant::now`].
fn std_anchor() -> std::time::Instant {
    static ANCHOR: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ANCHOR.get_or_init(std::time::Instant::now)
}

/// A source of [`BootInstant`]s, injected into everything that decides on time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> BootInstant;
}

/// The real clock: `CLOCK_BOOTTIME`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> BootInstant {
        BootInstant::now()
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<BootInstant>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: BootInstant) -> Self {
        Self { now: Arc::new(Mutex::new(start)) }
    }

    /// Moves the clock forward by `d` (saturating at the far future) and returns the new time.
    pub fn advance(&self, d: Duration) -> BootInstant {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(d).unwrap_or(BootInstant(Duration::MAX));
        *now
    }
}

impl Default for ManualClock {
    /// A clock stopped at the current real instant.
    fn default() -> Self {
        Self::new(BootInstant::now())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> BootInstant {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn boottime_is_monotonic_and_close_to_monotonic_clock() {
        let a = BootInstant::now();
        let b = BootInstant::now();
        assert!(b >= a, "{b:?} < {a:?}");
        // BOOTTIME >= MONOTONIC: both start at boot, BOOTTIME also counts suspended time.
        let mono = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap();
        let mono = BootInstant::from_timespec(mono.tv_sec(), mono.tv_nsec());
        assert!(BootInstant::now() >= mono);
    }

    #[test]
    fn arithmetic_saturates_or_is_checked() {
        let t = BootInstant::from_since_boot(Duration::from_secs(10));
        let later = t.checked_add(Duration::from_millis(1500)).unwrap();
        assert_eq!(later.duration_since(t), Duration::from_millis(1500));
        assert_eq!(t.duration_since(later), Duration::ZERO);
        assert_eq!(later.checked_sub(Duration::from_millis(1500)), Some(t));
        assert_eq!(t.checked_sub(Duration::from_secs(11)), None);
        assert_eq!(BootInstant::from_since_boot(Duration::MAX).checked_add(Duration::from_nanos(1)), None);
        assert!(later > t);
    }

    #[test]
    fn elapsed_counts_forward() {
        let t = BootInstant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.elapsed() >= Duration::from_millis(5));
        let future = BootInstant::now().checked_add(Duration::from_secs(3600)).unwrap();
        assert_eq!(future.elapsed(), Duration::ZERO);
    }

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::new(BootInstant::from_since_boot(Duration::from_secs(100)));
        let other = clock.clone();
        assert_eq!(clock.now(), other.now());
        let t = clock.advance(Duration::from_secs(15));
        assert_eq!(other.now(), t);
        assert_eq!(t.since_boot(), Duration::from_secs(115));
        clock.advance(Duration::MAX);
        assert_eq!(other.now().since_boot(), Duration::MAX);
    }

    #[test]
    fn clock_is_object_safe() {
        let clocks: Vec<Box<dyn Clock>> = vec![Box::new(SystemClock), Box::new(ManualClock::default())];
        for c in clocks {
            assert!(c.now() <= BootInstant::now());
        }
    }
}
