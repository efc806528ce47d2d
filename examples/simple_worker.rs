//! SimpleWorker: a pool of 2 worker processes with a
//! `random_string` method that takes 100–500 ms; each worker is recycled
//! after 10 calls. The main loop sends one call per tick; each result is
//! counted in the daemon's own state the moment it arrives (not at the
//! next tick), through `spawn_then`.
//!
//! ```text
//! cargo run --example simple_worker -- --interval 0.2 -v
//! ```

use daemonic::event::{WorkerRecycled, WorkerSpawned};
use daemonic::prelude::*;
use daemonic::ShutdownReason;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The worker: its state is sent to every child process at spawn.
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Generator {
    length: usize,
    #[serde(skip)]
    seed: u64,
}

#[daemonic::worker]
impl Generator {
    /// Runs in each new child before its first call.
    fn started(&mut self, ctx: &mut WorkerContext) {
        self.seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        ctx.log("generator worker started");
    }

    /// Sleeps 100–500 ms, then returns a random alphanumeric string.
    pub fn random_string(&mut self, call: u64) -> String {
        let pause = 100 + self.next() % 400;
        std::thread::sleep(Duration::from_millis(pause));
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let s: String = (0..self.length)
            .map(|_| CHARS[(self.next() % CHARS.len() as u64) as usize] as char)
            .collect();
        format!(
            "{s} (call {call}, {pause} ms, worker pid {})",
            std::process::id()
        )
    }
}

impl Generator {
    fn next(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }
}

#[derive(Default)]
struct SimpleWorker {
    pool: Option<Addr<WorkerPool<Generator>>>,
    /// Results received, and calls that failed: the daemon's own state,
    /// updated as replies arrive.
    received: u64,
    failed: u64,
}

impl Daemon for SimpleWorker {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        let pool = ctx
            .workers(Generator {
                length: 12,
                seed: 1,
            })
            .size(2)
            .max_calls_per_child(10)
            .call_timeout(Duration::from_secs(2))
            .start()?;
        self.pool = Some(pool);
        Ok(())
    }

    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        let call = ctx.iteration();
        // The reply is handled when it arrives, with the daemon's own state;
        // the loop does not wait.
        ctx.spawn_then(
            pool.call(generator::RandomString { call }),
            move |daemon, ctx, result| match result {
                Ok(s) => {
                    daemon.received += 1;
                    ctx.log(format_args!(
                        "random string: {s}; {} received so far",
                        daemon.received
                    ));
                }
                Err(e) => {
                    daemon.failed += 1;
                    ctx.error(format_args!("call {call} failed: {e}"));
                }
            },
        );
    }

    fn shutdown(&mut self, ctx: &mut LoopContext<'_, Self>, _: &ShutdownReason) {
        ctx.log(format_args!(
            "{} results received, {} calls failed",
            self.received, self.failed
        ));
    }
}

fn main() -> std::process::ExitCode {
    DaemonBuilder::new(SimpleWorker::default())
        .name("simple_worker")
        .interval(Duration::from_millis(500))
        .on(|e: &mut WorkerSpawned| log::info!("worker pid {} spawned", e.pid))
        .on(|e: &mut WorkerRecycled| log::info!("worker pid {} recycled ({})", e.pid, e.reason))
        .main()
}
