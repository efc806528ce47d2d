//! Main-loop benchmark: ticks per second at interval 0, and lateness at a
//! 10 ms interval, each against a bare loop measured in the same run: a
//! bare `timerfd` loop on its own thread is the baseline for lateness, idle
//! and with a CPU hog (one busy thread per core) running beside it.
//!
//! ```text
//! cargo bench -p daemonic --bench main_loop [-- --quick]
//! ```

use daemonic::{Daemon, DaemonBuilder, LoopContext, LoopPriority};
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

fn run(interval: Duration, limit: usize, priority: LoopPriority) -> Vec<Instant> {
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
            .loop_priority(priority)
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

/// Lateness of each tick against its fixed-rate schedule (tick `k` due at
/// `t0 + k * interval`).
fn lateness(ticks: &[Instant], interval: Duration) -> Vec<Duration> {
    let t0 = ticks[0];
    let mut late: Vec<Duration> = ticks
        .iter()
        .enumerate()
        .map(|(k, t)| t.saturating_duration_since(t0 + interval * k as u32))
        .collect();
    late.sort();
    late
}

/// The baseline: a thread sleeping on an absolute `timerfd` schedule, doing
/// nothing else.
fn bare_timerfd(interval: Duration, ticks: usize, priority: LoopPriority) -> Vec<Instant> {
    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
    std::thread::spawn(move || {
        favour_this_thread(priority);
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC).unwrap();
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: plain clock read into our struct.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let start = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        let mut out = Vec::with_capacity(ticks);
        // Tick 0 runs at once, as the daemon's first tick does: a timer set
        // in the past still fires through the timer interrupt, and a first
        // sample taken that late would hide the wake-up latency of every
        // later tick (lateness is measured from the first sample).
        out.push(Instant::now());
        for k in 1..ticks as u32 {
            let due = start + interval * k;
            timer
                .set(
                    Expiration::OneShot(TimeSpec::from_duration(due)),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                )
                .unwrap();
            timer.wait().unwrap();
            out.push(Instant::now());
        }
        out
    })
    .join()
    .unwrap()
}

/// The baseline thread gets the scheduling the daemon's loop gets.
fn favour_this_thread(priority: LoopPriority) {
    // SAFETY: plain system calls on the calling thread.
    let rc = match priority {
        LoopPriority::Nice(n) => unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, n)
        },
        LoopPriority::RealTime(p) => unsafe {
            let param = libc::sched_param {
                sched_priority: i32::from(p),
            };
            libc::sched_setscheduler(0, libc::SCHED_FIFO, &param)
        },
        _ => 0,
    };
    assert_eq!(rc, 0, "{priority:?}: {}", std::io::Error::last_os_error());
}

/// One busy thread per core until dropped.
struct Hog(
    Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<()>>,
);

impl Hog {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self(stop, threads)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

fn main() {
    // Cargo passes `--bench`; `--quick` (CI's log) runs a tenth of it.
    let quick = std::env::args().any(|a| a == "--quick");
    // Interval 0: as fast as possible.
    let n = if quick { 200_000 } else { 2_000_000 };
    let ticks = run(Duration::ZERO, n, LoopPriority::Inherit);
    let secs = (ticks[n - 1] - ticks[0]).as_secs_f64();
    let rate = (n - 1) as f64 / secs;
    // Baseline: a bare loop doing the same bookkeeping (push an Instant).
    let mut bare = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        bare.push(Instant::now());
    }
    let bare_rate = n as f64 / start.elapsed().as_secs_f64();

    println!(
        "main loop ({} build{})",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        if quick { ", --quick" } else { "" }
    );
    println!("| measure | daemonic | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| ticks/s at interval 0 | {:.2} M | bare loop {:.1} M | — | ≥ 1 M |",
        rate / 1e6,
        bare_rate / 1e6
    );

    // Interval 10 ms: lateness of each tick, idle and beside a CPU hog.
    let interval = Duration::from_millis(10);
    let m = if quick { 100 } else { 300 };
    // The favoured settings need CAP_SYS_NICE: without it, only the default.
    let favoured: &[LoopPriority] = if nix::unistd::geteuid().is_root() {
        &[LoopPriority::Nice(-10), LoopPriority::RealTime(10)]
    } else {
        &[]
    };
    for (load, hog) in [("idle", false), ("CPU hog", true)] {
        let _hog = hog.then(Hog::start);
        for &priority in std::iter::once(&LoopPriority::Inherit).chain(favoured) {
            let ours = lateness(&run(interval, m, priority), interval);
            let base = lateness(&bare_timerfd(interval, m, priority), interval);
            let how = match priority {
                LoopPriority::Nice(n) => format!(", nice {n}"),
                LoopPriority::RealTime(p) => format!(", SCHED_FIFO {p}"),
                _ => String::new(),
            };
            for (label, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
                let (a, b) = (percentile(&ours, p), percentile(&base, p));
                let pct = a.as_secs_f64() / interval.as_secs_f64() * 100.0;
                let target = match label {
                    "p99" => "≤ 10% and ≤ 1.5× baseline",
                    _ => "—",
                };
                println!(
                    "| lateness {label} at 10 ms, {load}{how} ({m} ticks) | {:.1} µs ({pct:.2}%) | bare timerfd{how} {:.1} µs | {:.2}× | {target} |",
                    a.as_secs_f64() * 1e6,
                    b.as_secs_f64() * 1e6,
                    a.as_secs_f64() / b.as_secs_f64().max(1e-9),
                );
            }
        }
    }
}
