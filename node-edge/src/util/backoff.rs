//! Capped exponential backoff (pure: no clock; callers pass what happened).
//!
//! Used for service restarts, failing promises, partition-pass retries and the master link.

use std::time::Duration;

/// Doubling delays between `min` and `max`; [`Backoff::reset`] goes back to `min`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `min` and capped at `max` (`max` is raised to `min` if below it).
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
            failures: 0,
        }
    }

    /// Record a failure and return how long to wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// The delay the next failure would return, without recording one.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the first delay (the operation succeeded, or ran long enough to count as healthy).
    pub fn reset(&mut self) {
        self.next = self.min;
        self.failures = 0;
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(700));
        let seq: Vec<_> = (0..5).map(|_| b.fail()).collect();
        assert_eq!(seq, [ms(100), ms(200), ms(400), ms(700), ms(700)]);
        assert_eq!(b.failures(), 5);
        b.reset();
        assert_eq!(b.fail(), ms(100));
    }

    #[test]
    fn max_below_min_is_raised() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.fail(), Duration::from_secs(2));
        assert_eq!(b.fail(), Duration::from_secs(2));
    }
}
