//! How long a supervisor waits before a restart: nothing for the first one
//! in the intensity window, then exponentially longer, with jitter and a cap,
//! so a crash loop is never a fork bomb and restarted siblings across trees
//! do not fall into step.

use std::time::Duration;

/// Exponential backoff between restarts.
///
/// The first restart within the intensity window is immediate (as in OTP);
/// the n-th after it waits `base * 2^(n-1)`, at most `cap`, minus up to
/// `jitter` of it at random.
///
/// ```
/// use daemonic::supervision::Backoff;
/// use std::time::Duration;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jitter(0.0);
/// assert_eq!(backoff.delay(0, 0.5), Duration::ZERO);
/// assert_eq!(backoff.delay(1, 0.5), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3, 0.5), Duration::from_millis(400));
/// assert_eq!(backoff.delay(30, 0.5), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 10 s, with 20 % jitter.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Starts at `base`, doubles, never exceeds `cap` (20 % jitter).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            jitter: 0.2,
        }
    }

    /// No wait at all: every restart is immediate.
    pub fn none() -> Self {
        Self::new(Duration::ZERO, Duration::ZERO)
    }

    /// The share of each delay that is random (0 to 1, default 0.2).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The wait before a restart that follows `recent` others within the
    /// intensity window; `unit` is a random number in `[0, 1)`.
    pub fn delay(&self, recent: usize, unit: f64) -> Duration {
        if recent == 0 {
            return Duration::ZERO;
        }
        let doublings = (recent - 1).min(32) as u32;
        let full = self
            .base
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.cap)
            .min(self.cap);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        full.mul_f64(1.0 - self.jitter * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(500)).jitter(0.0);
        let delays: Vec<u128> = (0..10).map(|n| b.delay(n, 0.7).as_millis()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 320, 500, 500, 500]);
        // Far past any shift width: still the cap, no overflow.
        assert_eq!(b.delay(usize::MAX, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_share() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.25);
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(75));
        for i in 0..100 {
            let d = b.delay(2, i as f64 / 100.0);
            assert!(d <= Duration::from_millis(200) && d >= Duration::from_millis(150));
        }
        // Garbage in, the full delay out.
        assert_eq!(b.delay(1, f64::NAN), Duration::from_millis(100));
        assert_eq!(
            b.jitter(f64::INFINITY).delay(1, 0.5),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn none_never_waits() {
        assert_eq!(Backoff::none().delay(50, 0.3), Duration::ZERO);
    }
}
