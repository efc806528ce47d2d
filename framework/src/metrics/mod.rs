//! Prometheus metrics, a live status page and `/status.json` (cargo feature
//! `metrics`).
//!
//! `--metrics ADDR` (or [`DaemonBuilder::metrics`](crate::DaemonBuilder::metrics))
//! starts a small actix-web server in the daemon that serves
//!
//! - `/metrics`: the daemon's metrics in the Prometheus text format (loop
//!   ticks, overruns and lateness; per pool calls by outcome, a latency
//!   histogram, queue depth, calls in flight, restarts, recycles and workers
//!   by state; tasks by exit status; memory of the daemon and its workers),
//!   followed by the metrics you register;
//! - `/`: a status page that refreshes itself every 2 seconds, with no
//!   JavaScript and no external assets;
//! - `/status.json`: the document `status --json` prints.
//!
//! The server is off by default and listens on loopback unless `ADDR` names
//! another host (`9100` and `:9100` mean `127.0.0.1:9100`). It is read-only:
//! every route answers `GET` only.
//!
//! Your own metrics are [`prometheus_client`] metrics, registered with the
//! daemon's [`Metrics`] before or after it starts:
//!
//! ```no_run
//! use daemonic::metrics::prometheus_client::metrics::counter::Counter;
//! use daemonic::{Daemon, DaemonBuilder, LoopContext};
//!
//! struct Mailer {
//!     sent: Counter,
//! }
//!
//! impl Daemon for Mailer {
//!     fn execute(&mut self, _: &mut LoopContext<'_, Self>) {
//!         self.sent.inc();
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let sent = Counter::default();
//!     let builder = DaemonBuilder::new(Mailer { sent: sent.clone() }).metrics("127.0.0.1:9100");
//!     builder
//!         .metrics_registry()
//!         .register("mailer_sent", "Mails sent", sent);
//!     builder.main()
//! }
//! ```

mod collect;
mod page;
mod recent;
pub(crate) mod server;

pub use prometheus_client;

use crate::error::{Error, Result};
use crate::event::Events;
use crate::Stats;
use parking_lot::Mutex;
use prometheus_client::registry::{Metric, Registry, Unit};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The daemon's metrics registry: the daemon's own metrics and yours. Cheap
/// to clone; all clones share the registry.
///
/// ```
/// use daemonic::metrics::prometheus_client::metrics::gauge::Gauge;
/// use daemonic::metrics::Metrics;
///
/// let metrics = Metrics::new();
/// let depth = Gauge::<i64>::default();
/// metrics.register("queue_depth", "Jobs waiting", depth.clone());
/// depth.set(3);
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    events: collect::EventMetrics,
    recent: recent::Recent,
    /// The stats of the scrape being encoded (read by the stats collector).
    current: Arc<Mutex<Option<Stats>>>,
    /// Set once the event listeners are subscribed.
    watching: std::sync::Once,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the daemon's metrics in it.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let current = Arc::new(Mutex::new(None));
        let events = collect::EventMetrics::default();
        events.register(&mut registry);
        registry.register_collector(Box::new(collect::StatsCollector::new(current.clone())));
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                events,
                recent: recent::Recent::default(),
                current,
                watching: std::sync::Once::new(),
            }),
        }
    }

    /// Registers one of your metrics (a `Counter`, `Gauge`, `Histogram`,
    /// `Family`, ...). Keep a clone of it to update it: metrics are shared
    /// handles.
    pub fn register(&self, name: impl Into<String>, help: impl Into<String>, metric: impl Metric) {
        self.inner.registry.lock().register(name, help, metric);
    }

    /// Registers one of your metrics with a unit (the name gets its suffix).
    pub fn register_with_unit(
        &self,
        name: impl Into<String>,
        help: impl Into<String>,
        unit: Unit,
        metric: impl Metric,
    ) {
        self.inner
            .registry
            .lock()
            .register_with_unit(name, help, unit, metric);
    }

    /// Runs `f` with the registry itself (sub-registries, prefixes, collectors).
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.inner.registry.lock())
    }

    /// Subscribes the event-driven metrics (call latencies, task exits,
    /// recent restarts) to a daemon's events. Only done when the server
    /// runs: the call-latency listener runs once per worker call.
    pub(crate) fn watch(&self, events: &Events) {
        self.inner.watching.call_once(|| {
            self.inner.events.subscribe(events);
            self.inner.recent.subscribe(events);
        });
    }

    /// The Prometheus text for `stats` and every registered metric.
    pub(crate) fn encode(&self, stats: Stats) -> std::result::Result<String, std::fmt::Error> {
        let registry = self.inner.registry.lock();
        // Under the registry's lock: concurrent scrapes each see their own stats.
        *self.inner.current.lock() = Some(stats);
        let mut text = String::with_capacity(16 * 1024);
        let encoded = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        self.inner.current.lock().take();
        encoded.map(|()| text)
    }

    /// The status page for `stats`.
    pub(crate) fn page(&self, stats: &Stats) -> String {
        page::render(
            stats,
            &self.inner.recent.list(),
            std::time::SystemTime::now(),
        )
    }
}

/// Parses `--metrics ADDR`: `PORT`, `:PORT` or `HOST:PORT` (loopback unless
/// a host is given).
pub(crate) fn parse_addr(value: &str) -> Result<SocketAddr> {
    let value = value.trim();
    let loopback = |port: &str| {
        port.parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
    };
    let parsed = match value.strip_prefix(':') {
        Some(port) => loopback(port).ok(),
        None => loopback(value).ok().or_else(|| value.parse().ok()),
    };
    parsed.ok_or_else(|| {
        Error::Config(format!(
            "--metrics takes PORT, :PORT or HOST:PORT (e.g. 127.0.0.1:9100), got {value:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        let local = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(parse_addr("9100").unwrap(), local(9100));
        assert_eq!(parse_addr(":9100").unwrap(), local(9100));
        assert_eq!(parse_addr("127.0.0.1:0").unwrap(), local(0));
        assert_eq!(
            parse_addr("0.0.0.0:9100").unwrap(),
            "0.0.0.0:9100".parse().unwrap()
        );
        assert_eq!(
            parse_addr("[::1]:9100").unwrap(),
            "[::1]:9100".parse().unwrap()
        );
        for bad in ["", "x", "99999", "localhost:9100", "1.2.3.4"] {
            let err = parse_addr(bad).unwrap_err();
            assert_eq!(err.exit_code(), crate::ExitCode::Config, "{bad}");
        }
    }
}
