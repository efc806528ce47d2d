//! When the next tick runs: pure scheduling logic (tested with a synthetic
//! clock) and a precise sleeper on `timerfd`.
//!
//! tokio's timer wheel has millisecond granularity, so a 10 ms loop on it is
//! up to 10% late by construction; a `timerfd` registered with the reactor
//! wakes within tens of microseconds.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// What the loop should do after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Run the next tick at once (interval 0, or after an overrun).
    Now,
    /// Sleep until this instant.
    Until(Instant),
}

/// The outcome of one tick for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Next {
    pub wait: Wait,
    /// The tick finished after the next one was due.
    pub overrun: bool,
    /// Time to spare before the next tick (raises the idle event).
    pub idle: Option<Duration>,
}

/// Fixed-rate schedule: tick `k` is due at `start + k * interval`. A tick that
/// overruns its slot makes the next one start at once and re-bases the
/// schedule there, so an overrun never causes a burst of catch-up ticks.
#[derive(Debug, Clone)]
pub(crate) struct LoopTimer {
    interval: Duration,
    due: Instant,
}

impl LoopTimer {
    /// A schedule whose first tick is due at `now`.
    pub(crate) fn new(interval: Duration, now: Instant) -> Self {
        Self { interval, due: now }
    }

    /// When the tick about to run was due.
    pub(crate) fn due(&self) -> Instant {
        self.due
    }

    /// Records that the current tick finished at `finished`; says when the next runs.
    pub(crate) fn after_tick(&mut self, finished: Instant) -> Next {
        if self.interval.is_zero() {
            self.due = finished;
            return Next {
                wait: Wait::Now,
                overrun: false,
                idle: None,
            };
        }
        let next_due = self.due + self.interval;
        if finished >= next_due {
            self.due = finished;
            Next {
                wait: Wait::Now,
                overrun: true,
                idle: None,
            }
        } else {
            self.due = next_due;
            Next {
                wait: Wait::Until(next_due),
                overrun: false,
                idle: Some(next_due - finished),
            }
        }
    }
}

/// nix's `TimerFd` only implements `AsFd`; tokio's reactor wants `AsRawFd`.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Sleeps until an instant with microsecond precision.
pub(crate) struct PreciseSleep {
    fd: AsyncFd<Timer>,
}

impl PreciseSleep {
    /// Must be called inside a tokio runtime.
    pub(crate) fn new() -> std::io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the timerfd is owned by `Timer`, which the AsyncFd owns for
        // its whole life, so the descriptor stays open and the same.
        let fd = unsafe { AsyncFd::register(Timer(timer)) }?;
        Ok(Self { fd })
    }

    pub(crate) async fn sleep_until(&self, deadline: Instant) -> std::io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        let delay = TimeSpec::from_duration(deadline - now);
        self.fd
            .get_ref()
            .0
            .set(Expiration::OneShot(delay), TimerSetTimeFlags::empty())?;
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match guard.try_io(|fd| {
                nix::unistd::read(&fd.get_ref().0, &mut expirations).map_err(std::io::Error::from)
            }) {
                Ok(Ok(_)) => {
                    // The one expiration is consumed: without this, the next
                    // sleep would find the old readiness and spend a `read`
                    // on EAGAIN before it waits.
                    guard.clear_ready();
                    return Ok(());
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn on_time_ticks_keep_a_fixed_rate_and_report_idle() {
        let t0 = Instant::now();
        let mut timer = LoopTimer::new(10 * MS, t0);
        let next = timer.after_tick(t0 + 3 * MS);
        assert_eq!(next.wait, Wait::Until(t0 + 10 * MS));
        assert_eq!(next.idle, Some(7 * MS));
        assert!(!next.overrun);
        // Woken 1 ms late: the schedule does not drift.
        let next = timer.after_tick(t0 + 12 * MS);
        assert_eq!(next.wait, Wait::Until(t0 + 20 * MS));
    }

    #[test]
    fn an_overrun_runs_the_next_tick_at_once_without_catch_up_burst() {
        let t0 = Instant::now();
        let mut timer = LoopTimer::new(10 * MS, t0);
        // execute took 35 ms: three slots missed.
        let next = timer.after_tick(t0 + 35 * MS);
        assert_eq!(next.wait, Wait::Now);
        assert!(next.overrun);
        assert_eq!(next.idle, None);
        // The next tick (started at 35 ms) is quick: one tick later, not three.
        let next = timer.after_tick(t0 + 36 * MS);
        assert_eq!(next.wait, Wait::Until(t0 + 45 * MS));
        assert!(!next.overrun);
    }

    #[test]
    fn interval_zero_never_waits_or_overruns() {
        let t0 = Instant::now();
        let mut timer = LoopTimer::new(Duration::ZERO, t0);
        for i in 1..100u32 {
            let next = timer.after_tick(t0 + i * MS);
            assert_eq!(next.wait, Wait::Now);
            assert!(!next.overrun);
            assert_eq!(next.idle, None);
        }
    }

    #[test]
    fn finishing_exactly_at_the_deadline_is_an_overrun() {
        let t0 = Instant::now();
        let mut timer = LoopTimer::new(10 * MS, t0);
        assert!(timer.after_tick(t0 + 10 * MS).overrun);
    }

    #[actix::test]
    async fn precise_sleep_wakes_after_the_deadline() {
        let sleeper = PreciseSleep::new().unwrap();
        for _ in 0..3 {
            let deadline = Instant::now() + 2 * MS;
            sleeper.sleep_until(deadline).await.unwrap();
            assert!(Instant::now() >= deadline);
        }
    }
}
