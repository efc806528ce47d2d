//! Main-loop benchmark: ticks per second at interval 0, and lateness at a
//! 10 ms interval, against a bare loop measured in the same run.
//!
//! ```text
//! cargo bench -p daemonic --bench main_loop
//! ```

use daemonic::{Daemon, DaemonBuilder, LoopContext};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Counter {
    ticks: Arc<Mutex<Vec<Instant>>>,
    limit: usize,
}

impl Daemon for Counter {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let mut ticks = self.ticks.lock();
        ticks.push(Instant::now());
        if ticks.len() == self.limit {
            ctx.shutdown();
        }
    }
}

fn run(interval: Duration, limit: usize) -> Vec<Instant> {
    let ticks = Arc::new(Mutex::new(Vec::with_capacity(limit + 1024)));
    let daemon = Counter {
        ticks: ticks.clone(),
        limit,
    };
    let system = actix::System::new();
    system.block_on(async move {
        let handle = DaemonBuilder::new(daemon)
            .name("bench")
            .interval(interval)
            .handle_signals(false)
            .log_file("/dev/null")
            .start()
            .expect("start");
        handle.wait().await;
    });
    let v = ticks.lock().clone();
    v
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // Interval 0: as fast as possible.
    let n = 2_000_000;
    let ticks = run(Duration::ZERO, n);
    let secs = (ticks[n - 1] - ticks[0]).as_secs_f64();
    let rate = (n - 1) as f64 / secs;
    // Baseline: a bare loop doing the same bookkeeping (push an Instant).
    let mut bare = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        bare.push(Instant::now());
    }
    let bare_rate = n as f64 / start.elapsed().as_secs_f64();

    // Interval 10 ms: lateness of each tick against its fixed-rate schedule.
    let interval = Duration::from_millis(10);
    let m = 300;
    let ticks = run(interval, m);
    let t0 = ticks[0];
    let mut late: Vec<Duration> = ticks
        .iter()
        .enumerate()
        .map(|(k, t)| t.saturating_duration_since(t0 + interval * k as u32))
        .collect();
    late.sort();

    println!("main loop (release build)");
    println!("| measure | daemonic | baseline | target |");
    println!("|---|---|---|---|");
    println!(
        "| ticks/s at interval 0 | {:.2} M | bare loop {:.1} M | ≥ 1 M |",
        rate / 1e6,
        bare_rate / 1e6
    );
    for (label, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let d = percentile(&late, p);
        println!(
            "| lateness {label} at 10 ms ({m} ticks) | {:.1} µs ({:.2}% of interval) | — | p99 ≤ 10% |",
            d.as_secs_f64() * 1e6,
            d.as_secs_f64() / interval.as_secs_f64() * 100.0
        );
    }
}
