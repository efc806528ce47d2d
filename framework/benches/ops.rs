//! Operations benchmark: what tracing and metrics cost.
//!
//! - one `tracing` event to the daemon's log, next to a `log` record and a
//!   direct slog line, and a `tracing` event below the daemon's level;
//! - the per-call metrics listener (one `WorkerReturned` dispatch with and
//!   without `--metrics`);
//! - a `/metrics` scrape over HTTP, with a pool of 2 workers.
//!
//! ```text
//! cargo bench -p daemonic --features metrics --bench ops
//! ```

use daemonic::event::WorkerReturned;
use daemonic::worker::WorkerContext;
use daemonic::{Daemon, DaemonBuilder, DaemonHandle, LoopContext};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Echo;

#[daemonic::worker]
impl Echo {
    fn started(&mut self, _: &mut WorkerContext) {}

    pub fn echo(&mut self, n: u64) -> u64 {
        n
    }
}

struct Idle;

impl Daemon for Idle {
    fn execute(&mut self, _: &mut LoopContext<'_, Self>) {}
}

fn start(metrics: bool) -> DaemonHandle {
    let mut builder = DaemonBuilder::new(Idle)
        .name("bench")
        .interval_secs(1.0)
        .handle_signals(false)
        .log_file("/dev/null");
    if metrics {
        builder = builder.metrics("127.0.0.1:0");
    }
    builder.start().expect("start")
}

/// Nanoseconds per call of `f`, best of 5 runs of `n`.
fn ns_per(n: u32, mut f: impl FnMut(u32)) -> f64 {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn returned() -> WorkerReturned {
    WorkerReturned {
        pool: "echo".into(),
        pid: 1,
        method: "echo",
        latency: Duration::from_micros(60),
        error: None,
    }
}

/// One HTTP/1.0 GET, the whole answer read; returns the time it took.
fn scrape(addr: &str) -> Duration {
    let t = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    assert!(answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"));
    t.elapsed()
}

fn main() {
    let system = actix::System::new();
    let rows = system.block_on(async {
        let mut rows = Vec::new();
        // Logging: the daemon without the metrics server.
        let plain = start(false);
        let n = 200_000;
        let slog = plain.logger().slog().clone();
        rows.push((
            "slog line (the baseline)",
            ns_per(n, |i| slog::info!(slog, "line"; "n" => i)),
        ));
        rows.push(("`log` record", ns_per(n, |i| log::info!("line n={i}"))));
        rows.push((
            "`tracing` event, 1 field",
            ns_per(n, |i| tracing::info!(n = i, "line")),
        ));
        let span = tracing::info_span!("job", id = 7);
        let entered = span.enter();
        rows.push((
            "`tracing` event in a span, 1 + 1 fields",
            ns_per(n, |i| tracing::info!(n = i, "line")),
        ));
        drop(entered);
        rows.push((
            "`tracing` debug event below the level",
            ns_per(n * 10, |i| tracing::debug!(n = i, "dropped")),
        ));
        let no_listener = ns_per(1_000_000, |_| plain.events().dispatch(&mut returned()));
        plain.shutdown();
        plain.wait().await;

        // Metrics: the per-call listener and a scrape.
        let served = start(true);
        let with_listener = ns_per(1_000_000, |_| served.events().dispatch(&mut returned()));
        rows.push(("WorkerReturned dispatch, no listener", no_listener));
        rows.push((
            "WorkerReturned dispatch, --metrics histogram",
            with_listener,
        ));
        let pool = served.workers(Echo).size(2).start().expect("pool");
        for i in 0..1000 {
            let _ = pool.send(echo::Echo { n: i }).await;
        }
        let addr = loop {
            let stats = served.stats().await.expect("stats");
            if stats.pools.first().is_some_and(|p| p.children.len() >= 2) {
                break bound_addr();
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        };
        let mut times = Vec::new();
        for _ in 0..300 {
            let addr = addr.clone();
            times.push(
                actix_rt::task::spawn_blocking(move || scrape(&addr))
                    .await
                    .expect("scrape"),
            );
        }
        times.sort();
        served.shutdown();
        served.wait().await;
        (rows, times)
    });
    let (rows, times) = rows;
    println!("operations (release build)");
    println!("| measure | ns per call |");
    println!("|---|---|");
    for (what, ns) in rows {
        println!("| {what} | {ns:.0} |");
    }
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!();
    println!(
        "| /metrics scrape over HTTP (pool of 2, {} scrapes) | p50 | p99 |",
        times.len()
    );
    println!("|---|---|---|");
    println!(
        "| connect, GET, read the whole answer | {:.0} µs | {:.0} µs |",
        p(0.5).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6
    );
}

/// The address the metrics server logged (it listens on an ephemeral port):
/// found through the process's own listening sockets.
fn bound_addr() -> String {
    let inodes: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|p| {
            let s = p.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let table = std::fs::read_to_string("/proc/self/net/tcp").expect("tcp table");
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // st 0A = LISTEN; local address 0100007F:PORT = 127.0.0.1.
        if f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| inodes.iter().any(|x| x == i)) {
            if let Some(port) = f[1].strip_prefix("0100007F:") {
                let port = u16::from_str_radix(port, 16).expect("port");
                return format!("127.0.0.1:{port}");
            }
        }
    }
    panic!("no listening socket of the metrics server");
}
