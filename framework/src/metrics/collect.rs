//! The daemon's own metrics: some counted from events as they happen (call
//! latencies, task exits), the rest read from a [`Stats`] snapshot taken at
//! each scrape (loop, pools, tasks running, memory).

use crate::daemon::stats::{MemoryStats, LATENESS_BUCKETS_US};
use crate::event::{Events, TaskExited, WorkerReturned};
use crate::task::TaskStatus;
use crate::Stats;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::Arc;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 25 µs (a same-core round trip) to ~4 s.
    Histogram::new(exponential_buckets(25e-6, 2.5, 14))
}

/// Metrics counted from the daemon's events.
#[derive(Clone)]
pub(super) struct EventMetrics {
    call_duration: Family<Labels, Histogram>,
    task_exits: Family<Labels, Counter>,
}

impl Default for EventMetrics {
    fn default() -> Self {
        Self {
            call_duration: Family::new_with_constructor(latency_histogram),
            task_exits: Family::default(),
        }
    }
}

/// The `status` label of a task's exit.
fn task_status(status: &TaskStatus) -> &'static str {
    match status {
        TaskStatus::Exited(0) => "ok",
        TaskStatus::Exited(_) => "exit_code",
        TaskStatus::Failed(_) => "failed",
        TaskStatus::Panicked(_) => "panicked",
        TaskStatus::Signaled(_) => "killed",
    }
}

impl EventMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "daemonic_pool_call_duration",
            "Time from send to reply of worker calls, by pool",
            Unit::Seconds,
            self.call_duration.clone(),
        );
        registry.register(
            "daemonic_tasks_exited",
            "Tasks that ended, by task and exit status (ok, exit_code, failed, panicked, killed)",
            self.task_exits.clone(),
        );
    }

    pub(super) fn subscribe(&self, events: &Events) {
        let durations = self.call_duration.clone();
        events.on(move |e: &mut WorkerReturned| {
            durations
                .get_or_create(&vec![("pool", e.pool.clone())])
                .observe(e.latency.as_secs_f64());
        });
        let exits = self.task_exits.clone();
        events.on(move |e: &mut TaskExited| {
            exits
                .get_or_create(&vec![
                    ("task", crate::task::short_name(e.name)),
                    ("status", task_status(&e.status).to_string()),
                ])
                .inc();
        });
    }
}

/// Encodes the metrics of the scrape's [`Stats`].
#[derive(Debug)]
pub(super) struct StatsCollector {
    current: Arc<Mutex<Option<Stats>>>,
}

impl StatsCollector {
    pub(super) fn new(current: Arc<Mutex<Option<Stats>>>) -> Self {
        Self { current }
    }
}

/// One metric family: its samples as (labels, value).
struct Samples<M> {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    samples: Vec<(Labels, M)>,
}

impl<M: EncodeMetric> Samples<M> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            unit: None,
            samples: Vec::new(),
        }
    }

    fn unit(mut self, unit: Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    fn add(&mut self, labels: Labels, metric: M) {
        self.samples.push((labels, metric));
    }

    fn with(mut self, labels: Labels, metric: M) -> Self {
        self.add(labels, metric);
        self
    }

    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some((_, first)) = self.samples.first() else {
            return Ok(());
        };
        // Worded like the registry's own help texts, which end with a period.
        let help = format!("{}.", self.help);
        let mut family =
            encoder.encode_descriptor(self.name, &help, self.unit.as_ref(), first.metric_type())?;
        for (labels, metric) in &self.samples {
            metric.encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

fn count(v: usize) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The main loop's lateness histogram, from the loop's own buckets.
#[derive(Debug)]
struct Lateness {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for Lateness {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn lateness(stats: &Stats) -> Lateness {
    let h = &stats.main_loop.lateness;
    let bounds = LATENESS_BUCKETS_US
        .iter()
        .map(|us| *us as f64 / 1e6)
        .chain([f64::INFINITY]);
    Lateness {
        sum: h.sum.as_secs_f64(),
        count: h.count,
        buckets: bounds.zip(h.buckets.iter().copied()).collect(),
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.current.lock().clone() else {
            return Ok(());
        };
        let e = &mut encoder;
        let l = &stats.main_loop;
        let none = Labels::new;
        gauge_family("daemonic_uptime", "Time since the daemon started")
            .unit(Unit::Seconds)
            .with(none(), gauge(stats.uptime.as_secs_f64()))
            .encode(e)?;
        Samples::new(
            "daemonic_loop_ticks",
            "Main loop ticks run (skipped ones included)",
        )
        .with(none(), counter(l.iterations))
        .encode(e)?;
        Samples::new(
            "daemonic_loop_skipped_ticks",
            "Ticks a pre-execute listener skipped",
        )
        .with(none(), counter(l.skipped))
        .encode(e)?;
        Samples::new(
            "daemonic_loop_overruns",
            "Ticks that did not finish before the next one was due",
        )
        .with(none(), counter(l.overruns))
        .encode(e)?;
        gauge_family("daemonic_loop_interval", "Configured loop interval")
            .unit(Unit::Seconds)
            .with(none(), gauge(l.interval.as_secs_f64()))
            .encode(e)?;
        gauge_family("daemonic_loop_execute_mean", "Mean duration of execute")
            .unit(Unit::Seconds)
            .with(none(), gauge(l.mean_execute.as_secs_f64()))
            .encode(e)?;
        gauge_family("daemonic_loop_execute_max", "Longest duration of execute")
            .unit(Unit::Seconds)
            .with(none(), gauge(l.max_execute.as_secs_f64()))
            .encode(e)?;
        Samples::new(
            "daemonic_loop_lateness",
            "How late ticks started after they were due",
        )
        .unit(Unit::Seconds)
        .with(none(), lateness(&stats))
        .encode(e)?;
        encode_memory(&stats, e)?;
        encode_pools(&stats, e)?;
        let mut running = Samples::new("daemonic_tasks_running", "Tasks running, by task");
        for (name, n) in &stats.tasks {
            running.add(vec![("task", name.clone())], count(*n));
        }
        running.encode(e)
    }
}

fn gauge_family(name: &'static str, help: &'static str) -> Samples<ConstGauge<f64>> {
    Samples::new(name, help)
}

fn encode_memory(stats: &Stats, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let main = vec![("process", "main".to_string())];
    let mut rss = gauge_family(
        "daemonic_memory_resident",
        "Resident memory of the daemon (process=main) and of each pool's workers together",
    )
    .unit(Unit::Bytes)
    .with(main.clone(), gauge(stats.memory.rss_bytes as f64));
    let mut private = gauge_family(
        "daemonic_memory_private",
        "Resident memory not shared with other processes, as daemonic_memory_resident_bytes",
    )
    .unit(Unit::Bytes)
    .with(main, gauge(stats.memory.private_bytes as f64));
    for pool in &stats.pools {
        let (r, p) = pool
            .children
            .iter()
            .map(|c| MemoryStats::of_pid(Some(c.pid)))
            .fold((0, 0), |(r, p), m| (r + m.rss_bytes, p + m.private_bytes));
        let labels = vec![
            ("process", "worker".to_string()),
            ("pool", pool.name.clone()),
        ];
        rss.add(labels.clone(), gauge(r as f64));
        private.add(labels, gauge(p as f64));
    }
    rss.encode(e)?;
    private.encode(e)
}

fn encode_pools(stats: &Stats, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let mut size = Samples::new("daemonic_pool_size", "Configured number of workers");
    let mut calls = Samples::new(
        "daemonic_pool_calls",
        "Finished worker calls by outcome (ok, or the error: timeout, died, panicked, busy, ...)",
    );
    let mut queued = Samples::new("daemonic_pool_queued_calls", "Calls waiting for a worker");
    let mut in_flight = Samples::new("daemonic_pool_in_flight_calls", "Calls held by workers");
    let mut restarts = Samples::new(
        "daemonic_pool_restarts",
        "Workers replaced after an unexpected exit",
    );
    let mut recycled = Samples::new("daemonic_pool_recycled", "Workers replaced by recycling");
    let mut workers = Samples::new(
        "daemonic_pool_workers",
        "Worker processes by state (ready, starting, spare, retiring, killed)",
    );
    let mut failed = Samples::new(
        "daemonic_pool_failed",
        "1 if the pool gave up respawning (restart limit reached)",
    );
    for pool in &stats.pools {
        let labels = || vec![("pool", pool.name.clone())];
        let with = |key: &'static str, value: &str| {
            let mut l = labels();
            l.push((key, value.to_string()));
            l
        };
        size.add(labels(), count(pool.size));
        calls.add(with("outcome", "ok"), counter(pool.returned));
        for (kind, n) in &pool.errors {
            calls.add(with("outcome", kind), counter(*n));
        }
        queued.add(labels(), count(pool.queued));
        in_flight.add(labels(), count(pool.in_flight));
        restarts.add(labels(), counter(pool.restarts));
        recycled.add(labels(), counter(pool.recycled));
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for child in &pool.children {
            *by_state.entry(child.state.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            workers.add(with("state", state), count(n));
        }
        failed.add(labels(), count(usize::from(pool.failed)));
    }
    size.encode(e)?;
    calls.encode(e)?;
    queued.encode(e)?;
    in_flight.encode(e)?;
    restarts.encode(e)?;
    recycled.encode(e)?;
    workers.encode(e)?;
    failed.encode(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{ChildStats, PoolStats};
    use std::time::Duration;

    fn sample_stats() -> Stats {
        let mut stats = Stats {
            name: "d".into(),
            pid: 1,
            ..Default::default()
        };
        stats.main_loop.iterations = 42;
        stats.main_loop.lateness.buckets = vec![0; LATENESS_BUCKETS_US.len() + 1];
        stats.main_loop.lateness.buckets[1] = 3;
        stats.main_loop.lateness.count = 3;
        stats.pools.push(PoolStats {
            name: "hasher".into(),
            size: 2,
            returned: 5,
            errors: vec![("timeout".into(), 1)],
            children: vec![
                ChildStats {
                    pid: 0,
                    uptime: Duration::ZERO,
                    calls: 3,
                    state: "ready".into(),
                },
                ChildStats {
                    pid: 0,
                    uptime: Duration::ZERO,
                    calls: 0,
                    state: "ready".into(),
                },
            ],
            ..Default::default()
        });
        stats.tasks.push(("mail".into(), 2));
        stats
    }

    #[test]
    fn stats_become_prometheus_samples() {
        let metrics = super::super::Metrics::new();
        let events = Events::new();
        metrics.watch(&events);
        events.dispatch(&mut WorkerReturned {
            pool: "hasher".into(),
            pid: 1,
            method: "digest",
            latency: Duration::from_micros(100),
            error: None,
        });
        events.dispatch(&mut TaskExited {
            name: "x::mail",
            pid: 2,
            status: TaskStatus::Exited(0),
            runtime: Duration::ZERO,
        });
        let text = metrics.encode(sample_stats()).unwrap();
        for line in [
            "daemonic_loop_ticks_total 42",
            "daemonic_loop_lateness_seconds_bucket{le=\"0.0001\"} 3",
            "daemonic_loop_lateness_seconds_count 3",
            "daemonic_pool_calls_total{pool=\"hasher\",outcome=\"ok\"} 5",
            "daemonic_pool_calls_total{pool=\"hasher\",outcome=\"timeout\"} 1",
            "daemonic_pool_workers{pool=\"hasher\",state=\"ready\"} 2",
            "daemonic_tasks_running{task=\"mail\"} 2",
            "# TYPE daemonic_pool_call_duration_seconds histogram",
            "daemonic_pool_call_duration_seconds_bucket{pool=\"hasher\",le=\"0.00015625\"} 1",
            "daemonic_pool_call_duration_seconds_count{pool=\"hasher\"} 1",
            "daemonic_tasks_exited_total{task=\"mail\",status=\"ok\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
    }

    #[test]
    fn task_statuses_have_stable_labels() {
        assert_eq!(task_status(&TaskStatus::Exited(0)), "ok");
        assert_eq!(task_status(&TaskStatus::Exited(3)), "exit_code");
        assert_eq!(task_status(&TaskStatus::Failed("x".into())), "failed");
        assert_eq!(task_status(&TaskStatus::Panicked("x".into())), "panicked");
        assert_eq!(task_status(&TaskStatus::Signaled(9)), "killed");
    }
}
