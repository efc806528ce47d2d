//! Process-layer benchmark: fork-server spawn latency and task throughput,
//! each beside a raw `fork()` measured in the same run.
//!
//! ```text
//! cargo bench -p daemonic --bench process
//! ```

use daemonic::task::{self, Task, TaskContext};
use daemonic::testing::{fork_server, ChildStart, EntryPoint, SpawnOptions, ENTRY_POINTS};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process, so a
/// child's timestamp splits a spawn into "until the child runs" and "until
/// the parent hears of it".
fn mono_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: plain clock read into our struct (async-signal-safe).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Child entry point that proves user code runs: its first instant back to
/// the host.
fn ping(mut start: ChildStart) -> i32 {
    let now = mono_ns();
    let _ = start.channel().write_all(&now.to_le_bytes());
    0
}

#[linkme::distributed_slice(ENTRY_POINTS)]
static PING: EntryPoint = EntryPoint {
    name: "bench::ping",
    run: ping,
};

#[derive(Serialize, Deserialize)]
struct Noop;

#[daemonic::task]
impl Task for Noop {
    fn run(self, _: &mut TaskContext) -> Result<(), daemonic::BoxError> {
        Ok(())
    }
}

/// The pause between two spawns in the "spaced" rows.
const PAUSE: Duration = Duration::from_millis(2);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One spawn, split at the instant the child's code ran.
#[derive(Clone, Copy)]
struct Split {
    /// Request → the child's first instant.
    to_child: Duration,
    /// The child's first instant → the parent has read it.
    to_parent: Duration,
}

impl Split {
    fn new(start: u64, child: u64, end: u64) -> Self {
        Self {
            to_child: Duration::from_nanos(child.saturating_sub(start)),
            to_parent: Duration::from_nanos(end.saturating_sub(child)),
        }
    }

    fn total(&self) -> Duration {
        self.to_child + self.to_parent
    }
}

/// fork → child writes its instant to a pipe and `_exit`s → parent reads,
/// reaps.
fn raw_fork_latency(samples: usize, pause: Duration) -> Vec<Split> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        std::thread::sleep(pause);
        let (r, w) = nix::unistd::pipe().unwrap();
        let start = mono_ns();
        // SAFETY: the child only calls async-signal-safe functions.
        match unsafe { libc::fork() } {
            0 => unsafe {
                use std::os::fd::AsRawFd;
                let now = mono_ns().to_le_bytes();
                libc::write(w.as_raw_fd(), now.as_ptr().cast(), now.len());
                libc::_exit(0);
            },
            pid => {
                drop(w);
                let mut child = [0u8; 8];
                std::fs::File::from(r).read_exact(&mut child).unwrap();
                out.push(Split::new(start, u64::from_le_bytes(child), mono_ns()));
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            }
        }
    }
    out
}

/// One cross-process wake-up: a child blocked in `read` on a pipe is woken
/// by a byte and answers on another; half the round trip. The spawn path
/// has more of these than a self-fork (parent → fork server, fork server →
/// parent), and in this VM each costs tens of microseconds when the other
/// side's CPU is idle.
fn wake_up_latency(samples: usize) -> Vec<Duration> {
    let (to_child_r, to_child_w) = nix::unistd::pipe().unwrap();
    let (to_parent_r, to_parent_w) = nix::unistd::pipe().unwrap();
    // SAFETY: the child only calls async-signal-safe functions.
    match unsafe { libc::fork() } {
        0 => unsafe {
            use std::os::fd::AsRawFd;
            // The parent's ends: with them open here, the read below would
            // never see the parent hang up.
            libc::close(to_child_w.as_raw_fd());
            libc::close(to_parent_r.as_raw_fd());
            let mut b = [0u8; 1];
            while libc::read(to_child_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) == 1 {
                libc::write(to_parent_w.as_raw_fd(), b.as_ptr().cast(), 1);
            }
            libc::_exit(0);
        },
        pid => {
            drop((to_child_r, to_parent_w));
            let mut tx = std::fs::File::from(to_child_w);
            let mut rx = std::fs::File::from(to_parent_r);
            let mut out = Vec::with_capacity(samples);
            let mut b = [0u8; 1];
            for _ in 0..samples {
                let start = Instant::now();
                tx.write_all(b"x").unwrap();
                rx.read_exact(&mut b).unwrap();
                out.push(start.elapsed() / 2);
                // Let both sides go idle, as between two spawns.
                std::thread::sleep(Duration::from_micros(200));
            }
            drop(tx);
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            out
        }
    }
}

fn server_latency(samples: usize, pause: Duration) -> Vec<Split> {
    let options = SpawnOptions {
        entry: "bench::ping".into(),
        role: "bench:ping".into(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        std::thread::sleep(pause);
        let start = mono_ns();
        let mut spawned = fork_server().spawn(&options).unwrap();
        let mut child = [0u8; 8];
        spawned.channel.read_exact(&mut child).unwrap();
        out.push(Split::new(start, u64::from_le_bytes(child), mono_ns()));
        spawned.process.wait_blocking().unwrap();
    }
    out
}

/// Spawn `n` children that exit at once, then reap them all.
fn raw_fork_throughput(n: usize) -> f64 {
    let start = Instant::now();
    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: the child only calls _exit.
        match unsafe { libc::fork() } {
            0 => unsafe { libc::_exit(0) },
            pid => pids.push(pid),
        }
    }
    for pid in pids {
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn task_throughput(n: usize) -> f64 {
    let start = Instant::now();
    let mut children: Vec<_> = (0..n).map(|_| task::spawn(&Noop).unwrap()).collect();
    for c in &mut children {
        assert!(c.wait_blocking().unwrap().success());
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// [`task_throughput`] with the spawns split over `threads` threads: their
/// requests reach the fork server together, as in a daemon whose loop and
/// pools start children at the same time.
fn task_throughput_threads(n: usize, threads: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut children: Vec<_> = (0..n / threads)
                    .map(|_| task::spawn(&Noop).unwrap())
                    .collect();
                for c in &mut children {
                    assert!(c.wait_blocking().unwrap().success());
                }
            });
        }
    });
    (n / threads * threads) as f64 / start.elapsed().as_secs_f64()
}

fn assert_single_threaded() {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(threads, 1, "the raw fork baseline must run single-threaded");
}

fn main() {
    // Cargo passes `--bench`; `--quick` (CI's log) takes a tenth of the samples.
    let quick = std::env::args().any(|a| a == "--quick");
    let samples = if quick { 200 } else { 2000 };
    let n = if quick { 300 } else { 3000 };
    // `--profile-latency` / `--profile-tasks`: only that part of the
    // daemonic side, many times over, for `perf record` or `strace`.
    if let Some(part) =
        std::env::args().find_map(|a| a.strip_prefix("--profile-").map(String::from))
    {
        if part != "raw" {
            if std::env::var_os("DAEMONIC_PREFORK").is_none() {
                fork_server().set_prefork(true);
            }
            fork_server().prestart().unwrap();
        }
        let rounds = 10;
        for _ in 0..rounds {
            match part.as_str() {
                "latency" => drop(server_latency(samples, Duration::ZERO)),
                "latency-spaced" => drop(server_latency(samples / 4, PAUSE)),
                "raw" => drop(raw_fork_throughput(n)),
                "tasks2" => drop(task_throughput_threads(n, 2)),
                _ => drop(task_throughput(n)),
            }
        }
        return;
    }
    // The raw baselines fork this process itself: measure them first, while
    // it is still single-threaded (the fork server's launcher thread does
    // not exist yet), as the fork-safety rule demands.
    assert_single_threaded();
    let _ = raw_fork_latency(100, Duration::ZERO);
    let raw = raw_fork_latency(samples, Duration::ZERO);
    let raw_spaced = raw_fork_latency(samples / 2, PAUSE);
    let raw_tp = raw_fork_throughput(n);
    let mut wake = wake_up_latency(samples.min(1000));
    wake.sort();
    assert_single_threaded();

    // The warm spare is measured (a daemon opts in); `DAEMONIC_PREFORK`
    // decides when it is set.
    if std::env::var_os("DAEMONIC_PREFORK").is_none() {
        fork_server().set_prefork(true);
    }
    fork_server().prestart().unwrap();
    let _ = server_latency(100, Duration::ZERO); // warm up
    let srv = server_latency(samples, Duration::ZERO);
    let srv_spaced = server_latency(samples / 2, PAUSE);
    let srv_tp = task_throughput(n);
    let srv_tp2 = task_throughput_threads(n, 2);
    let sorted = |v: &[Split], part: fn(&Split) -> Duration| {
        let mut d: Vec<Duration> = v.iter().map(part).collect();
        d.sort();
        d
    };

    println!(
        "process layer ({samples} samples, {n} tasks; {} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("| measure | daemonic | raw fork() | ratio |");
    println!("|---|---|---|---|");
    type Part = fn(&Split) -> Duration;
    let parts: [(&str, Part); 3] = [
        ("spawn → child code → parent knows", Split::total),
        ("of which request → child code runs", |s| s.to_child),
        ("of which child code → parent knows", |s| s.to_parent),
    ];
    for (what, part) in parts {
        let (ours, base) = (sorted(&srv, part), sorted(&raw, part));
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (a, b) = (percentile(&ours, p), percentile(&base, p));
            println!(
                "| {what}, {label} | {:.1} µs | {:.1} µs | {:.2}× |",
                us(a),
                us(b),
                us(a) / us(b)
            );
        }
    }
    // A daemon spawns on events, not back to back: with a pause between
    // spawns, a warm spare has been forked before the request comes.
    for (what, part) in [
        ("spawn → child code → parent knows", Split::total as Part),
        ("of which request → child code runs", |s: &Split| {
            s.to_child
        }),
    ] {
        let (ours, base) = (sorted(&srv_spaced, part), sorted(&raw_spaced, part));
        for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
            let (a, b) = (percentile(&ours, p), percentile(&base, p));
            println!(
                "| {what}, {label}, spawns {} ms apart | {:.1} µs | {:.1} µs | {:.2}× |",
                PAUSE.as_millis(),
                us(a),
                us(b),
                us(a) / us(b)
            );
        }
    }
    println!(
        "| one cross-process wake-up (pipe ping-pong / 2), p50 | — | {:.1} µs | — |",
        us(percentile(&wake, 0.5))
    );
    println!(
        "| tasks spawned+reaped /s | {:.0} | {:.0} | {:.2}× |",
        srv_tp,
        raw_tp,
        srv_tp / raw_tp
    );
    println!(
        "| tasks spawned+reaped /s, from 2 threads | {:.0} | {:.0} (1 thread) | {:.2}× |",
        srv_tp2,
        raw_tp,
        srv_tp2 / raw_tp
    );
}
