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

/// Child entry point that proves user code runs: one byte back to the host.
fn ping(mut start: ChildStart) -> i32 {
    let _ = start.channel().write_all(b"x");
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// fork → child writes a byte to a pipe and `_exit`s → parent reads, reaps.
fn raw_fork_latency(samples: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let (r, w) = nix::unistd::pipe().unwrap();
        let start = Instant::now();
        // SAFETY: the child only calls async-signal-safe functions.
        match unsafe { libc::fork() } {
            0 => unsafe {
                use std::os::fd::AsRawFd;
                libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1);
                libc::_exit(0);
            },
            pid => {
                drop(w);
                let mut byte = [0u8; 1];
                std::fs::File::from(r).read_exact(&mut byte).unwrap();
                out.push(start.elapsed());
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            }
        }
    }
    out
}

fn server_latency(samples: usize) -> Vec<Duration> {
    let options = SpawnOptions {
        entry: "bench::ping".into(),
        role: "bench:ping".into(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        let mut spawned = fork_server().spawn(&options).unwrap();
        let mut byte = [0u8; 1];
        spawned.channel.read_exact(&mut byte).unwrap();
        out.push(start.elapsed());
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
    // The raw baselines fork this process itself: measure them first, while
    // it is still single-threaded (the fork server's launcher thread does
    // not exist yet), as the fork-safety rule demands.
    assert_single_threaded();
    let _ = raw_fork_latency(100);
    let mut raw = raw_fork_latency(samples);
    let raw_tp = raw_fork_throughput(n);
    assert_single_threaded();

    fork_server().prestart().unwrap();
    let _ = server_latency(100); // warm up
    let mut srv = server_latency(samples);
    let srv_tp = task_throughput(n);
    raw.sort();
    srv.sort();

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
    for (label, p) in [
        ("spawn → child code p50", 0.5),
        ("spawn → child code p99", 0.99),
    ] {
        let (a, b) = (percentile(&srv, p), percentile(&raw, p));
        println!(
            "| {label} | {:.1} µs | {:.1} µs | {:.2}× |",
            us(a),
            us(b),
            us(a) / us(b)
        );
    }
    println!(
        "| tasks spawned+reaped /s | {:.0} | {:.0} | {:.2}× |",
        srv_tp,
        raw_tp,
        srv_tp / raw_tp
    );
}
