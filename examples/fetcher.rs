//! Fetcher: an I/O-bound worker whose `async` method overlaps its calls in
//! ONE worker process (`max_concurrent`). Every tick sends a batch of
//! "requests" to the pool; each one awaits 50–150 ms (it stands for an HTTP
//! request). The daemon counts the answers in its own state as they arrive
//! (`spawn_then`) and logs the wall time of each batch.
//!
//! ```text
//! cargo run --example fetcher -- --batch 50 --concurrent 50
//! cargo run --example fetcher -- --batch 50 --concurrent 1   # one at a time
//! ```

use clap::Args;
use daemonic::cli::Program;
use daemonic::prelude::*;
use daemonic::ShutdownReason;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The worker: its state is sent to the worker process at its start.
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Fetcher {
    /// Slowest answer, in milliseconds.
    max_ms: u64,
}

#[daemonic::worker]
impl Fetcher {
    /// `async` and `&self`: calls overlap, up to the pool's `max_concurrent`.
    pub async fn fetch(&self, ctx: &mut WorkerContext, url: String) -> Result<usize, String> {
        if url.ends_with("/404") {
            return Err(format!("{url}: not found"));
        }
        let wait = Duration::from_millis(50 + fnv(&url) % (self.max_ms - 50).max(1));
        // Give up early rather than be killed at the pool's call timeout.
        if ctx.remaining().is_some_and(|left| left < wait) {
            return Err(format!("{url}: would miss the deadline"));
        }
        ctx.debug(
            2,
            format_args!("call {:?}: GET {url} ({wait:?})", ctx.call_id()),
        );
        tokio::time::sleep(wait).await;
        Ok(url.len())
    }
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Args)]
struct Flags {
    /// Requests sent per tick.
    #[arg(long, default_value_t = 20)]
    batch: u64,
    /// Requests one worker runs at once.
    #[arg(long, default_value_t = 20)]
    concurrent: usize,
}

/// A batch in flight: when it was sent and what came back so far.
struct Batch {
    sent: Instant,
    ok: u64,
    failed: u64,
}

struct Crawler {
    flags: Flags,
    pool: Option<Addr<WorkerPool<Fetcher>>>,
    batches: HashMap<u64, Batch>,
    fetched: u64,
    failed: u64,
}

impl Daemon for Crawler {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        let pool = ctx
            .workers(Fetcher { max_ms: 150 })
            .size(1)
            .max_concurrent(self.flags.concurrent)
            .queue_capacity(10_000)
            .call_timeout(Duration::from_secs(30))
            .start()?;
        self.pool = Some(pool);
        Ok(())
    }

    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let Some(pool) = &self.pool else { return };
        let batch = ctx.iteration();
        self.batches.insert(
            batch,
            Batch {
                sent: Instant::now(),
                ok: 0,
                failed: 0,
            },
        );
        let size = self.flags.batch;
        for i in 0..size {
            let url = if i == 7 {
                format!("https://example.com/{batch}/404")
            } else {
                format!("https://example.com/{batch}/{i}")
            };
            let call = pool.call(fetcher::Fetch { url });
            ctx.spawn_then(call, move |daemon, ctx, result| {
                let Some(b) = daemon.batches.get_mut(&batch) else {
                    return;
                };
                match result {
                    Ok(_) => b.ok += 1,
                    Err(CallError::Method(_)) => b.failed += 1,
                    Err(e) => {
                        b.failed += 1;
                        ctx.error(format_args!("batch {batch}: {e}"));
                    }
                }
                if b.ok + b.failed == size {
                    let (ok, failed, took) = (b.ok, b.failed, b.sent.elapsed());
                    daemon.batches.remove(&batch);
                    daemon.fetched += ok;
                    daemon.failed += failed;
                    ctx.log(format_args!(
                        "batch {batch}: {size} requests in {} ms on one worker ({ok} ok, {failed} failed)",
                        took.as_millis()
                    ));
                }
            });
        }
    }

    fn shutdown(&mut self, ctx: &mut LoopContext<'_, Self>, _: &ShutdownReason) {
        ctx.log(format_args!(
            "{} fetched, {} failed, {} batch(es) unfinished",
            self.fetched,
            self.failed,
            self.batches.len()
        ));
    }
}

fn main() -> std::process::ExitCode {
    let program = Program::new("fetcher")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Sends batches of slow requests to ONE worker process that overlaps them.");
    let cli = match program.parse::<Flags>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    let crawler = Crawler {
        flags: cli.app,
        pool: None,
        batches: HashMap::new(),
        fetched: 0,
        failed: 0,
    };
    DaemonBuilder::new(crawler)
        .interval(Duration::from_secs(1))
        .args(&cli.daemon)
        .run()
}
