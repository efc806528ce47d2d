//! What `status` shows of NATS: the connection, the pools this process
//! serves as a host, and the remote pools it calls.
//!
//! These types exist without the `nats` feature too, so a daemon's stats
//! document has one shape whatever features it was built with.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The NATS side of a daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NatsStats {
    /// The server connected to (`host:port`, and its name), or the
    /// configured addresses while not connected.
    pub server: String,
    /// `connected`, `disconnected` or `pending`.
    pub state: String,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Connection errors reported by the client (auth, I/O, slow consumer).
    pub errors: u64,
    /// The last of them.
    pub last_error: Option<String>,
    /// What this process serves, if it is a host.
    pub host: Option<HostStats>,
    /// The remote pools this process calls.
    pub remote_pools: Vec<RemotePoolStats>,
}

/// A serving host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostStats {
    /// The host's name in answers and heartbeats.
    pub name: String,
    /// Each served pool.
    pub services: Vec<ServiceStats>,
}

/// One pool a host serves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceStats {
    /// The pool's name.
    pub pool: String,
    /// The subject (and queue group) it is served on.
    pub subject: String,
    /// Calls taken.
    pub calls: u64,
    /// Calls answered with the method's value.
    pub returned: u64,
    /// Answers that were errors, by kind (`busy`, `died`, ...; JSON: an
    /// object).
    #[serde(with = "crate::json::pairs")]
    pub errors: Vec<(String, u64)>,
    /// Calls handed to the local pool, not answered yet.
    pub running: usize,
    /// Calls waiting on the host for room in the local pool.
    pub queued: usize,
    /// Of those, the ones their callers know as waiting: if this host is
    /// lost, they run elsewhere (the others resolve `HostLost`).
    #[serde(default)]
    pub promised: usize,
}

/// A remote pool, as its caller sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemotePoolStats {
    /// The pool's name (the worker type's short name).
    pub name: String,
    /// The subject calls are sent to.
    pub subject: String,
    /// Calls sent.
    pub calls: u64,
    /// Calls that returned the method's value.
    pub returned: u64,
    /// Calls waiting for an answer now.
    pub in_flight: usize,
    /// Errors by kind (`unavailable`, `host_lost`, `busy`, ...; JSON: an
    /// object).
    #[serde(with = "crate::json::pairs")]
    pub errors: Vec<(String, u64)>,
    /// Calls sent again (to another host, after `Busy` or a host lost
    /// before it started them).
    pub retries: u64,
    /// Answers that came after their call was settled (ignored).
    pub late_answers: u64,
    /// Answers per host (JSON: an object).
    #[serde(with = "crate::json::pairs")]
    pub hosts: Vec<(String, u64)>,
    /// Hosts heard from recently (answers, heartbeats, presence).
    pub live_hosts: usize,
    /// Round-trip latency percentiles (p50, p90, p99) of answered calls
    /// (JSON: `latency_seconds`, an object with `p50`, `p90` and `p99`).
    #[serde(rename = "latency_seconds", with = "crate::json::percentiles")]
    pub latency: Option<(Duration, Duration, Duration)>,
}

fn kinds(errors: &[(String, u64)]) -> String {
    let parts: Vec<String> = errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
    parts.join(",")
}

impl NatsStats {
    /// The report as lines, as dumped on SIGUSR1 and shown by `status`.
    pub fn lines(&self) -> Vec<String> {
        let mut head = format!(
            "nats: {} {} disconnects {} errors {}",
            self.state, self.server, self.disconnects, self.errors
        );
        if let Some(e) = &self.last_error {
            head.push_str(&format!(" (last: {e})"));
        }
        let mut lines = vec![head];
        if let Some(host) = &self.host {
            for s in &host.services {
                let mut line = format!(
                    "nats host {} serves {} on {}: calls {} returned {} running {} queued {}",
                    host.name, s.pool, s.subject, s.calls, s.returned, s.running, s.queued
                );
                if !s.errors.is_empty() {
                    line.push_str(&format!(" errors {}", kinds(&s.errors)));
                }
                lines.push(line);
            }
        }
        for p in &self.remote_pools {
            lines.extend(p.lines());
        }
        lines
    }
}

impl RemotePoolStats {
    /// The report as lines.
    pub fn lines(&self) -> Vec<String> {
        let mut head = format!(
            "remote pool {} on {}: calls {} returned {} in-flight {} retries {} live hosts {}",
            self.name,
            self.subject,
            self.calls,
            self.returned,
            self.in_flight,
            self.retries,
            self.live_hosts
        );
        if let Some((p50, p90, p99)) = self.latency {
            head.push_str(&format!(" latency p50 {p50:?} p90 {p90:?} p99 {p99:?}"));
        }
        if !self.errors.is_empty() {
            head.push_str(&format!(" errors {}", kinds(&self.errors)));
        }
        if self.late_answers > 0 {
            head.push_str(&format!(" late answers {}", self.late_answers));
        }
        let mut lines = vec![head];
        if !self.hosts.is_empty() {
            lines.push(format!(
                "remote pool {} answers by host: {}",
                self.name,
                kinds(&self.hosts)
            ));
        }
        lines
    }
}

#[cfg(feature = "nats")]
/// Latencies in a histogram of fixed, geometrically growing buckets (four
/// per doubling, from 1 µs): constant memory and O(1) recording on the
/// caller's hot path; percentiles are exact to within a bucket (±9%).
#[derive(Debug, Clone)]
pub(crate) struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

/// Four buckets per doubling over 2^32 µs (about 71 minutes).
#[cfg(feature = "nats")]
const BUCKETS: usize = 4 * 32 + 1;

#[cfg(feature = "nats")]
impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

#[cfg(feature = "nats")]
impl LatencyHistogram {
    fn bucket(d: Duration) -> usize {
        let us = d.as_micros().max(1) as f64;
        ((us.log2() * 4.0).floor() as usize).min(BUCKETS - 1)
    }

    /// The upper bound of bucket `i`.
    fn bound(i: usize) -> Duration {
        Duration::from_nanos((2f64.powf((i + 1) as f64 / 4.0) * 1000.0) as u64)
    }

    pub(crate) fn record(&mut self, d: Duration) {
        self.counts[Self::bucket(d)] += 1;
        self.total += 1;
    }

    /// p50, p90 and p99 (each the upper bound of its bucket).
    pub(crate) fn percentiles(&self) -> Option<(Duration, Duration, Duration)> {
        if self.total == 0 {
            return None;
        }
        let at = |p: f64| {
            let rank = ((self.total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in self.counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Self::bound(i);
                }
            }
            Self::bound(BUCKETS - 1)
        };
        Some((at(0.5), at(0.9), at(0.99)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "nats")]
    #[test]
    fn percentiles_land_within_a_bucket() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.percentiles(), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let (p50, p90, p99) = h.percentiles().unwrap();
        for (got, want) in [(p50, 500.0), (p90, 900.0), (p99, 990.0)] {
            let got = got.as_secs_f64() * 1e6;
            assert!(got >= want && got <= want * 1.2, "{got} µs for {want} µs");
        }
    }

    #[cfg(feature = "nats")]
    #[test]
    fn extremes_do_not_overflow() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(1_000_000));
        assert!(h.percentiles().is_some());
    }

    #[test]
    fn lines_name_what_an_operator_needs() {
        let stats = NatsStats {
            server: "127.0.0.1:4222".into(),
            state: "connected".into(),
            host: Some(HostStats {
                name: "h1".into(),
                services: vec![ServiceStats {
                    pool: "hasher".into(),
                    subject: "daemonic.x.Hasher".into(),
                    calls: 3,
                    returned: 2,
                    errors: vec![("busy".into(), 1)],
                    ..ServiceStats::default()
                }],
            }),
            remote_pools: vec![RemotePoolStats {
                name: "hasher".into(),
                hosts: vec![("h1".into(), 2)],
                ..RemotePoolStats::default()
            }],
            ..NatsStats::default()
        };
        let text = stats.lines().join("\n");
        for needle in [
            "nats: connected 127.0.0.1:4222",
            "serves hasher on daemonic.x.Hasher: calls 3 returned 2",
            "errors busy=1",
            "answers by host: h1=2",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
    }
}
