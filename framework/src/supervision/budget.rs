//! The restart intensity limit (OTP's `intensity` and `period`): at most
//! `limit` restarts within `window`; one more and the pool (or supervisor)
//! gives up instead of fork-bombing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct RestartBudget {
    limit: usize,
    window: Duration,
    restarts: VecDeque<Instant>,
}

impl RestartBudget {
    pub(crate) fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; `true` if that exceeds the budget.
    pub(crate) fn record(&mut self, now: Instant) -> bool {
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
        {
            self.restarts.pop_front();
        }
        self.restarts.len() > self.limit
    }

    /// Restarts within the window as of the last record.
    pub(crate) fn recent(&self) -> usize {
        self.restarts.len()
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Forgets every restart (a restarted pool or tree starts afresh).
    pub(crate) fn reset(&mut self) {
        self.restarts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_applies_within_the_window_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut budget = RestartBudget::new(3, Duration::from_secs(10));
        assert!(!budget.record(t0));
        assert!(!budget.record(t0 + s));
        assert!(!budget.record(t0 + 2 * s));
        assert!(
            budget.record(t0 + 3 * s),
            "a fourth within 10 s is one too many"
        );
        // Spread out, the same number is fine: old ones leave the window.
        let mut spread = RestartBudget::new(3, Duration::from_secs(10));
        for i in 0..20 {
            assert!(!spread.record(t0 + 4 * i * s), "restart {i}");
        }
        assert_eq!(spread.recent(), 3);
    }

    #[test]
    fn a_zero_limit_fails_at_the_first_restart() {
        let mut budget = RestartBudget::new(0, Duration::from_secs(1));
        assert!(budget.record(Instant::now()));
    }
}
