//! Worker pool stats.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// A snapshot of one pool.
///
/// ```
/// let stats = daemonic::worker::PoolStats::default();
/// for line in stats.lines() {
///     println!("{line}"); // as in the SIGUSR1 dump
/// }
/// let errors: u64 = stats.errors.iter().map(|(_, n)| n).sum();
/// assert_eq!(errors, 0);
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolStats {
    /// Pool name (the worker type's short name).
    pub name: String,
    /// Configured size.
    pub size: usize,
    /// Calls accepted.
    pub calls: u64,
    /// Calls that returned the method's value.
    pub returned: u64,
    /// Calls held by workers now.
    pub in_flight: usize,
    /// Calls waiting for a worker.
    pub queued: usize,
    /// Errors by kind (`timeout`, `died`, `panicked`, `busy`, ...; JSON:
    /// an object).
    #[serde(with = "crate::json::pairs")]
    pub errors: Vec<(String, u64)>,
    /// Workers replaced after an unexpected exit.
    pub restarts: u64,
    /// Workers replaced by recycling.
    pub recycled: u64,
    /// Calls a worker held but never started when it ended, run elsewhere.
    #[serde(default)]
    pub requeued: u64,
    /// Call arguments and results that travelled in shared memory (see
    /// [`shm_threshold`](crate::worker::WorkerPoolBuilder::shm_threshold)).
    #[serde(default)]
    pub shared_payloads: u64,
    /// Call latency percentiles over the last 4096 calls (p50, p90, p99;
    /// JSON: `latency_seconds`, an object with `p50`, `p90` and `p99`).
    #[serde(rename = "latency_seconds", with = "crate::json::percentiles")]
    pub latency: Option<(Duration, Duration, Duration)>,
    /// Each worker process.
    pub children: Vec<ChildStats>,
    /// Whether the pool gave up respawning.
    pub failed: bool,
}

/// One worker process.
///
/// ```
/// let stats = daemonic::worker::PoolStats::default();
/// for child in &stats.children {
///     println!("pid {} {} for {:?}, {} calls", child.pid, child.state, child.uptime, child.calls);
/// }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildStats {
    /// Its pid.
    pub pid: i32,
    /// Time since it was spawned (JSON: `uptime_seconds`).
    #[serde(rename = "uptime_seconds", with = "crate::json::seconds")]
    pub uptime: Duration,
    /// Calls it served.
    pub calls: u64,
    /// `ready`, `starting`, `spare`, `retiring` or `killed`.
    pub state: String,
}

impl PoolStats {
    /// The report as lines, as dumped on SIGUSR1.
    pub fn lines(&self) -> Vec<String> {
        let mut head = format!(
            "pool {}: size {} calls {} returned {} in-flight {} queued {} restarts {} recycled {}",
            self.name,
            self.size,
            self.calls,
            self.returned,
            self.in_flight,
            self.queued,
            self.restarts,
            self.recycled
        );
        if let Some((p50, p90, p99)) = self.latency {
            head.push_str(&format!(" latency p50 {p50:?} p90 {p90:?} p99 {p99:?}"));
        }
        if !self.errors.is_empty() {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            head.push_str(&format!(" errors {}", errors.join(",")));
        }
        if self.failed {
            head.push_str(" FAILED");
        }
        let mut lines = vec![head];
        for c in &self.children {
            lines.push(format!(
                "pool {} worker pid {}: {} uptime {:?} calls {}",
                self.name,
                c.pid,
                c.state,
                Duration::from_millis(c.uptime.as_millis() as u64),
                c.calls
            ));
        }
        lines
    }
}

/// Recent call latencies.
#[derive(Debug, Default)]
pub(crate) struct Latencies(VecDeque<Duration>);

impl Latencies {
    const KEEP: usize = 4096;

    pub(crate) fn record(&mut self, d: Duration) {
        if self.0.len() == Self::KEEP {
            self.0.pop_front();
        }
        self.0.push_back(d);
    }

    pub(crate) fn percentiles(&self) -> Option<(Duration, Duration, Duration)> {
        if self.0.is_empty() {
            return None;
        }
        // Three selections instead of a full sort: stats requests block the
        // pool's actor while they run.
        let mut v: Vec<Duration> = self.0.iter().copied().collect();
        let index = |p: f64| ((v.len() - 1) as f64 * p).round() as usize;
        let (i50, i90, i99) = (index(0.5), index(0.9), index(0.99));
        let p99 = *v.select_nth_unstable(i99).1;
        let p90 = *v[..=i99].select_nth_unstable(i90).1;
        let p50 = *v[..=i90].select_nth_unstable(i50).1;
        Some((p50, p90, p99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_a_sort() {
        let mut l = Latencies::default();
        for i in (1..=1000u64).rev() {
            l.record(Duration::from_micros(i));
        }
        let (p50, p90, p99) = l.percentiles().unwrap();
        assert_eq!(p50, Duration::from_micros(501));
        assert_eq!(p90, Duration::from_micros(900));
        assert_eq!(p99, Duration::from_micros(990));
    }
}
