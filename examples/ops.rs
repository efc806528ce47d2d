//! A daemon to operate: a pool of worker processes that checksum jobs, a
//! report task every few ticks, `tracing` events from every process, a metric
//! of its own, and — with `--metrics` — Prometheus metrics, a live status page
//! and `/status.json`.
//!
//! ```text
//! cargo run --example ops -- --metrics 127.0.0.1:9100 --interval 0.5 -v
//! curl -s http://127.0.0.1:9100/metrics | grep daemonic_pool_calls
//! curl -s http://127.0.0.1:9100/status.json
//! # and open http://127.0.0.1:9100/ in a browser
//! ```
//!
//! `--crash-every N` makes every Nth job kill its worker (to watch restarts on
//! the status page), `--fail-every N` makes every Nth job return an error.

use clap::Args;
use daemonic::cli::Program;
use daemonic::metrics::prometheus_client::metrics::counter::Counter;
use daemonic::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The worker: checksums a job's data in a child process.
#[daemonic::worker]
#[derive(Clone, Serialize, Deserialize)]
struct Checksummer {
    rounds: u32,
    crash_every: u64,
    fail_every: u64,
}

#[daemonic::worker]
impl Checksummer {
    fn started(&mut self, _: &mut WorkerContext) {
        tracing::info!(rounds = self.rounds, "checksum worker ready");
    }

    /// FNV-1a over `data`, `rounds` times.
    pub fn checksum(&mut self, job: u64, data: String) -> Result<String, String> {
        let span = tracing::info_span!("job", job);
        let _entered = span.enter();
        if self.crash_every > 0 && job.is_multiple_of(self.crash_every) {
            tracing::warn!("crashing on purpose");
            // SAFETY: killing our own process, as the OOM killer would.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        if self.fail_every > 0 && job.is_multiple_of(self.fail_every) {
            return Err(format!(
                "job {job} refused: a multiple of {}",
                self.fail_every
            ));
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..self.rounds {
            for byte in data.bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        let digest = format!("{hash:016x}");
        tracing::info!(bytes = data.len(), digest = %digest, "checksum computed");
        log::info!("job {job} done (a log record)");
        Ok(digest)
    }
}

/// A report: runs in its own process and exits.
#[derive(Serialize, Deserialize)]
struct Report {
    iteration: u64,
}

#[daemonic::task]
impl Task for Report {
    fn run(self, _: &mut TaskContext) -> Result<(), BoxError> {
        tracing::info!(iteration = self.iteration, "report task ran");
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
struct OpsArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 2, value_name = "N")]
    workers: usize,
    /// Start a report task every N ticks (0: never).
    #[arg(long, default_value_t = 10, value_name = "N")]
    task_every: u64,
    /// Every Nth job kills its worker (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    crash_every: u64,
    /// Every Nth job returns an error (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    fail_every: u64,
}

struct Ops {
    args: OpsArgs,
    pool: Option<Addr<WorkerPool<Checksummer>>>,
    jobs_submitted: Counter,
}

impl Daemon for Ops {
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        let pool = ctx
            .workers(Checksummer {
                rounds: 2000,
                crash_every: self.args.crash_every,
                fail_every: self.args.fail_every,
            })
            .size(self.args.workers)
            .call_timeout(Duration::from_secs(2))
            .start()?;
        self.pool = Some(pool);
        tracing::info!(workers = self.args.workers, "ops daemon initialized");
        Ok(())
    }

    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let job = ctx.iteration();
        if self.args.task_every > 0 && job % self.args.task_every == 0 {
            if let Err(e) = ctx.task(Report { iteration: job }) {
                tracing::error!(error = %e, "cannot start the report task");
            }
        }
        let Some(pool) = self.pool.clone() else {
            return;
        };
        self.jobs_submitted.inc();
        ctx.spawn(async move {
            let data = format!("job {job} payload");
            match pool.call(checksummer::Checksum { job, data }).await {
                Ok(_) => {}
                Err(CallError::Method(refused)) => {
                    tracing::warn!(job, reason = %refused, "job refused")
                }
                Err(e) => tracing::error!(job, error = %e, kind = e.kind(), "job failed"),
            }
        });
    }
}

fn main() -> std::process::ExitCode {
    let program = Program::new("ops")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
        "Checksums a job per tick in worker processes; shows tracing, metrics and a status page.",
    );
    let cli = match program.parse::<OpsArgs>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    let jobs_submitted = Counter::default();
    let builder = DaemonBuilder::new(Ops {
        args: cli.app,
        pool: None,
        jobs_submitted: jobs_submitted.clone(),
    })
    .interval_secs(1.0);
    builder.metrics_registry().register(
        "ops_jobs_submitted",
        "Jobs the main loop sent to the pool",
        jobs_submitted,
    );
    builder.args(&cli.daemon).run()
}
