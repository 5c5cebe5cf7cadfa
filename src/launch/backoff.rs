//! A pause that doubles with each failure in a row, up to a limit.
//!
//! The ssh launcher's host table uses it, and so does the process pool's
//! own launch backoff (`src/process/shared.rs`, 0.1 s doubling to 30 s).

use std::time::Duration;

/// The pause after `n` failures in a row: `first`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// `first` after one failure, doubling with each further one, never
    /// more than `max`.
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The pause after `failures` failures in a row (0 counts as 1).
    pub(crate) fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_limit() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(b.after(0), Duration::from_secs(1));
        assert_eq!(b.after(1), Duration::from_secs(1));
        assert_eq!(b.after(2), Duration::from_secs(2));
        assert_eq!(b.after(4), Duration::from_secs(8));
        assert_eq!(b.after(7), Duration::from_secs(60));
        assert_eq!(b.after(u32::MAX), Duration::from_secs(60));
        let pool = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(pool.after(9), Duration::from_millis(25_600));
        assert_eq!(pool.after(10), Duration::from_secs(30));
    }
}
