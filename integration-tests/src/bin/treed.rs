//! A test daemon with a supervision tree under its root: a `work`
//! supervisor with one pool. With `--crash-loop`, every tick kills a worker
//! of that pool, so the escalations climb to the root and end the daemon.

use clap::Args;
use daemonic::cli::Program;
use daemonic::prelude::*;
use daemonic::supervision::{Backoff, PoolSpec, Supervisor};
use std::time::Duration;

#[derive(Debug, Clone, Args)]
struct TreeArgs {
    /// Kill a worker of the supervised pool at every tick.
    #[arg(long)]
    crash_loop: bool,
    /// With `--crash-loop`: from this tick on (to outlast `--min-runtime`).
    #[arg(long, default_value_t = 0)]
    crash_from: u64,
}

#[daemonic::worker]
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Flaky;

#[daemonic::worker]
impl Flaky {
    pub fn die(&mut self) -> u32 {
        std::process::exit(3)
    }
}

struct Treed {
    flaky: Addr<WorkerPool<Flaky>>,
    crash_loop: bool,
    crash_from: u64,
}

impl Daemon for Treed {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        if self.crash_loop && ctx.iteration() >= self.crash_from {
            self.flaky.do_send(flaky::Die {});
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Program::new("treed").parse::<TreeArgs>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    let pool = PoolSpec::new(
        WorkerPool::builder(Flaky)
            .name("flaky")
            .size(1)
            .restart_limit(0, Duration::from_secs(60)),
    );
    let flaky = pool.addr();
    DaemonBuilder::new(Treed {
        flaky,
        crash_loop: cli.app.crash_loop,
        crash_from: cli.app.crash_from,
    })
    .supervise(
        Supervisor::builder("work")
            .intensity(1, Duration::from_secs(60))
            .backoff(Backoff::none())
            .child(pool),
    )
    .args(&cli.daemon)
    .run()
}
