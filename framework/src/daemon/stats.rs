//! Stats of a running daemon: a snapshot structure and the lock-free counters
//! it is read from (so a SIGUSR1 dump never waits for a busy main loop).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of the daemon's stats.
///
/// ```no_run
/// use daemonic::event::StatsCollecting;
/// use daemonic::Stats;
///
/// // A listener sees them (SIGUSR1, `status`), and may add fields:
/// let listener = |e: &mut StatsCollecting| {
///     let stats: &Stats = &e.stats;
///     let busy: usize = stats.pools.iter().map(|p| p.in_flight).sum();
///     e.add("calls in flight", busy);
/// };
/// # let _ = listener;
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Daemon name.
    pub name: String,
    /// Pid of the daemon's main process.
    pub pid: i32,
    /// Time since the daemon started (JSON: `uptime_seconds`).
    #[serde(rename = "uptime_seconds", with = "crate::json::seconds")]
    pub uptime: Duration,
    /// Main loop figures.
    pub main_loop: LoopStats,
    /// Memory of the main process.
    pub memory: MemoryStats,
    /// Worker pools started through the daemon.
    pub pools: Vec<crate::worker::PoolStats>,
    /// Plugins, in set-up order.
    pub plugins: Vec<String>,
    /// Running tasks by name (JSON: an object).
    #[serde(with = "crate::json::pairs")]
    pub tasks: Vec<(String, usize)>,
    /// Fields added by [`StatsCollecting`](crate::event::StatsCollecting)
    /// listeners (JSON: an object).
    #[serde(with = "crate::json::pairs")]
    pub extra: Vec<(String, String)>,
    /// Log lines of child processes dropped because the log sink was too
    /// slow: children never wait for it (they would stall their calls).
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// The NATS connection, served pools and remote pools (daemons given a
    /// [`Nats`](crate::remote) handle).
    #[serde(default)]
    pub nats: Option<crate::remote::NatsStats>,
    /// The daemon's supervision tree (children given to
    /// [`DaemonBuilder::supervise`](crate::DaemonBuilder::supervise)).
    #[serde(default)]
    pub tree: Option<crate::supervision::TreeStats>,
}

/// Main loop figures.
///
/// ```
/// use daemonic::Stats;
///
/// let stats = Stats::default();
/// assert_eq!(stats.main_loop.overruns, 0);
/// println!("{}", stats.main_loop.mean_execute.as_secs_f64());
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoopStats {
    /// Configured interval (zero = as fast as possible; JSON:
    /// `interval_seconds`).
    #[serde(rename = "interval_seconds", with = "crate::json::seconds")]
    pub interval: Duration,
    /// Ticks run (including skipped ones).
    pub iterations: u64,
    /// Ticks a pre-execute listener skipped.
    pub skipped: u64,
    /// Ticks that did not finish before the next one was due.
    pub overruns: u64,
    /// Mean duration of `execute` (JSON: `mean_execute_seconds`).
    #[serde(rename = "mean_execute_seconds", with = "crate::json::seconds")]
    pub mean_execute: Duration,
    /// Longest duration of `execute` (JSON: `max_execute_seconds`).
    #[serde(rename = "max_execute_seconds", with = "crate::json::seconds")]
    pub max_execute: Duration,
    /// Longest delay between when a tick was due and when it started
    /// (JSON: `max_lateness_seconds`).
    #[serde(rename = "max_lateness_seconds", with = "crate::json::seconds")]
    pub max_lateness: Duration,
    /// How late ticks started, as a histogram (only with a non-zero
    /// interval). Not part of the JSON document; `/metrics` exports it.
    #[serde(skip)]
    pub lateness: LatenessHistogram,
}

/// Upper bounds of the lateness histogram's buckets, in microseconds.
///
/// ```
/// assert_eq!(daemonic::LATENESS_BUCKETS_US[0], 50);
/// ```
pub const LATENESS_BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Lateness of the main loop's ticks.
///
/// ```
/// use daemonic::{LatenessHistogram, LATENESS_BUCKETS_US};
///
/// let h = LatenessHistogram::default();
/// for (bound, n) in LATENESS_BUCKETS_US.iter().zip(&h.buckets) {
///     println!("<= {bound} µs: {n}");
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct LatenessHistogram {
    /// Ticks per bucket (not cumulative), one per [`LATENESS_BUCKETS_US`]
    /// bound, then one for later ticks.
    pub buckets: Vec<u64>,
    /// Ticks measured.
    pub count: u64,
    /// Sum of their lateness.
    pub sum: Duration,
}

/// Memory of one process, from `/proc/<pid>/statm`.
///
/// ```
/// let me = daemonic::MemoryStats::current();
/// assert!(me.private_bytes <= me.rss_bytes);
/// ```
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Resident pages not shared with other processes, in bytes.
    pub private_bytes: u64,
}

impl MemoryStats {
    /// Reads the current process's memory figures (zeros if `/proc` is unavailable).
    pub fn current() -> Self {
        Self::of_pid(None)
    }

    /// Reads another process's memory figures.
    pub fn of_pid(pid: Option<i32>) -> Self {
        let path = match pid {
            Some(p) => format!("/proc/{p}/statm"),
            None => "/proc/self/statm".to_string(),
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        let fields: Vec<u64> = text
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        match fields.as_slice() {
            [_, resident, shared, ..] => Self {
                rss_bytes: resident * page,
                private_bytes: resident.saturating_sub(*shared) * page,
            },
            _ => Self::default(),
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Stats {
    /// The report as `key: value` lines, as dumped on SIGUSR1.
    pub fn lines(&self) -> Vec<String> {
        let l = &self.main_loop;
        let mut lines = vec![
            format!("daemon: {} pid {} uptime {}", self.name, self.pid, humantime::format_duration(round_ms(self.uptime))),
            format!(
                "loop: interval {:?} iterations {} skipped {} overruns {} execute mean {:?} max {:?} lateness max {:?}",
                l.interval, l.iterations, l.skipped, l.overruns, l.mean_execute, l.max_execute, l.max_lateness
            ),
            format!("memory: rss {} private {}", mib(self.memory.rss_bytes), mib(self.memory.private_bytes)),
        ];
        if !self.plugins.is_empty() {
            lines.push(format!("plugins: {}", self.plugins.join(", ")));
        }
        for pool in &self.pools {
            lines.extend(pool.lines());
        }
        for (name, n) in &self.tasks {
            lines.push(format!("tasks running {name}: {n}"));
        }
        if let Some(nats) = &self.nats {
            lines.extend(nats.lines());
        }
        if let Some(tree) = self.tree.as_ref().filter(|t| !t.children.is_empty()) {
            lines.extend(tree.lines().into_iter().map(|l| format!("tree: {l}")));
        }
        if self.log_lines_dropped > 0 {
            lines.push(format!(
                "log: {} lines of child processes dropped (log sink too slow)",
                self.log_lines_dropped
            ));
        }
        lines.extend(self.extra.iter().map(|(k, v)| format!("{k}: {v}")));
        lines
    }

    /// A one-line summary (systemd `STATUS=`).
    pub fn summary(&self) -> String {
        format!(
            "running {}: {} iterations, {} overruns, rss {}",
            humantime::format_duration(Duration::from_secs(self.uptime.as_secs())),
            self.main_loop.iterations,
            self.main_loop.overruns,
            mib(self.memory.rss_bytes)
        )
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Counters the main loop updates on every tick and anyone can read.
#[derive(Debug, Default)]
pub(crate) struct LoopCounters {
    pub iterations: AtomicU64,
    pub skipped: AtomicU64,
    pub overruns: AtomicU64,
    executed: AtomicU64,
    total_execute_ns: AtomicU64,
    max_execute_ns: AtomicU64,
    max_lateness_ns: AtomicU64,
    lateness_buckets: [AtomicU64; LATENESS_BUCKETS_US.len() + 1],
    lateness_sum_ns: AtomicU64,
}

/// The lateness bucket of `late`.
fn lateness_bucket(late: Duration) -> usize {
    let us = late.as_micros();
    LATENESS_BUCKETS_US
        .iter()
        .position(|&bound| us <= u128::from(bound))
        .unwrap_or(LATENESS_BUCKETS_US.len())
}

impl LoopCounters {
    pub(crate) fn record_execute(&self, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        self.executed.fetch_add(1, Ordering::Relaxed);
        self.total_execute_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_execute_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub(crate) fn record_lateness(&self, late: Duration) {
        let ns = late.as_nanos().min(u64::MAX as u128) as u64;
        self.max_lateness_ns.fetch_max(ns, Ordering::Relaxed);
        self.lateness_sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.lateness_buckets[lateness_bucket(late)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, interval: Duration) -> LoopStats {
        let executed = self.executed.load(Ordering::Relaxed);
        let total = self.total_execute_ns.load(Ordering::Relaxed);
        LoopStats {
            interval,
            iterations: self.iterations.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            mean_execute: Duration::from_nanos(total.checked_div(executed).unwrap_or(0)),
            max_execute: Duration::from_nanos(self.max_execute_ns.load(Ordering::Relaxed)),
            max_lateness: Duration::from_nanos(self.max_lateness_ns.load(Ordering::Relaxed)),
            lateness: {
                let buckets: Vec<u64> = self
                    .lateness_buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                LatenessHistogram {
                    count: buckets.iter().sum(),
                    buckets,
                    sum: Duration::from_nanos(self.lateness_sum_ns.load(Ordering::Relaxed)),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_compute_mean_and_max() {
        let c = LoopCounters::default();
        c.record_execute(Duration::from_millis(1));
        c.record_execute(Duration::from_millis(3));
        let s = c.snapshot(Duration::from_secs(1));
        assert_eq!(s.mean_execute, Duration::from_millis(2));
        assert_eq!(s.max_execute, Duration::from_millis(3));
    }

    #[test]
    fn lateness_lands_in_its_bucket() {
        let c = LoopCounters::default();
        c.record_lateness(Duration::from_micros(10));
        c.record_lateness(Duration::from_micros(50));
        c.record_lateness(Duration::from_micros(51));
        c.record_lateness(Duration::from_secs(3));
        let h = c.snapshot(Duration::from_millis(10)).lateness;
        assert_eq!(h.buckets.len(), LATENESS_BUCKETS_US.len() + 1);
        assert_eq!((h.buckets[0], h.buckets[1]), (2, 1));
        assert_eq!(h.buckets[LATENESS_BUCKETS_US.len()], 1);
        assert_eq!(h.count, 4);
        assert_eq!(h.sum, Duration::from_micros(3_000_111));
    }

    #[test]
    fn json_has_seconds_and_objects_not_secs_and_nanos() {
        let stats = Stats {
            name: "d".into(),
            uptime: Duration::from_millis(1500),
            main_loop: LoopStats {
                interval: Duration::from_millis(250),
                max_execute: Duration::from_micros(20),
                ..LoopStats::default()
            },
            pools: vec![crate::worker::PoolStats {
                name: "p".into(),
                errors: vec![("timeout".into(), 2)],
                latency: Some((
                    Duration::from_millis(1),
                    Duration::from_millis(2),
                    Duration::from_millis(3),
                )),
                children: vec![crate::worker::ChildStats {
                    uptime: Duration::from_secs(2),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            tasks: vec![("send_email".into(), 3)],
            extra: vec![("queue".into(), "7".into())],
            ..Stats::default()
        };
        let text = serde_json::to_string(&stats).unwrap();
        assert!(
            !text.contains("nanos") && !text.contains("secs\""),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["uptime_seconds"], 1.5);
        assert_eq!(json["main_loop"]["interval_seconds"], 0.25);
        assert_eq!(json["main_loop"]["max_execute_seconds"], 0.00002);
        assert_eq!(json["tasks"]["send_email"], 3);
        assert_eq!(json["extra"]["queue"], "7");
        let pool = &json["pools"][0];
        assert_eq!(pool["errors"]["timeout"], 2);
        assert_eq!(pool["latency_seconds"]["p99"], 0.003);
        assert_eq!(pool["children"][0]["uptime_seconds"], 2.0);
        // The NATS sections follow the same conventions.
        let with_nats = Stats {
            nats: Some(crate::remote::NatsStats {
                remote_pools: vec![crate::remote::RemotePoolStats {
                    errors: vec![("host_lost".into(), 1)],
                    hosts: vec![("a".into(), 5)],
                    latency: stats.pools[0].latency,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..stats.clone()
        };
        let nats: serde_json::Value = serde_json::to_value(&with_nats).unwrap();
        let remote = &nats["nats"]["remote_pools"][0];
        assert_eq!(remote["errors"]["host_lost"], 1);
        assert_eq!(remote["hosts"]["a"], 5);
        assert_eq!(remote["latency_seconds"]["p50"], 0.001);
        assert!(!nats.to_string().contains("nanos"));
        // The control channel sends it this way and reads it back.
        let back: Stats = serde_json::from_str(&text).unwrap();
        assert_eq!(back.uptime, stats.uptime);
        assert_eq!(back.tasks, stats.tasks);
        assert_eq!(back.pools[0].latency, stats.pools[0].latency);
        assert_eq!(back.pools[0].errors, stats.pools[0].errors);
    }

    #[test]
    fn memory_of_self_is_nonzero() {
        let m = MemoryStats::current();
        assert!(m.rss_bytes > 0 && m.private_bytes <= m.rss_bytes);
    }
}
