//! Plugins: a FileLock so only one instance runs, and a
//! MemoryPlugin that logs memory use every 5 s from the idle event.
//!
//! ```text
//! cargo run --example plugins -- --lock /tmp/plugins.lock -v
//! # in a second terminal, while the first runs:
//! cargo run --example plugins -- --lock /tmp/plugins.lock   # refused, exit code 75
//! ```

use clap::Args;
use daemonic::cli::{parse_positive_duration, Program};
use daemonic::event::IdleStarted;
use daemonic::plugin::{FileLock, Plugin, PluginContext, ShmLock};
use daemonic::{BoxError, Daemon, DaemonBuilder, LoopContext, MemoryStats};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Logs this process's memory every `every`, on the idle event (housekeeping
/// runs between ticks, never inside `execute`).
struct MemoryPlugin {
    every: Duration,
}

impl Plugin for MemoryPlugin {
    fn name(&self) -> &str {
        "memory"
    }

    fn setup(&mut self, ctx: &PluginContext) -> Result<(), BoxError> {
        let logger = ctx.logger.clone();
        let every = self.every;
        let last = Arc::new(Mutex::new(Instant::now()));
        ctx.events.on(move |_: &mut IdleStarted| {
            let mut last = last.lock();
            if last.elapsed() >= every {
                *last = Instant::now();
                let m = MemoryStats::current();
                logger.log(format_args!(
                    "memory: rss {:.1} MiB, private {:.1} MiB",
                    m.rss_bytes as f64 / 1048576.0,
                    m.private_bytes as f64 / 1048576.0
                ));
            }
        });
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
struct PluginArgs {
    /// The single-instance lock file.
    #[arg(
        long,
        default_value = "/tmp/daemonic-plugins.lock",
        value_name = "PATH"
    )]
    lock: PathBuf,
    /// Lock with POSIX shared memory (`daemonic.<NAME>`) instead of a file.
    #[arg(long, value_name = "NAME")]
    shm: Option<String>,
    /// Time between memory lines.
    #[arg(long, default_value = "5", value_name = "DURATION", value_parser = parse_positive_duration)]
    memory_every: Duration,
}

struct Plugins;

impl Daemon for Plugins {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        ctx.debug(1, format_args!("loop {}", ctx.iteration()));
    }
}

fn main() -> std::process::ExitCode {
    let program = Program::new("plugins")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Runs as a single instance (a lock plugin) and logs its memory use.");
    let cli = match program.parse::<PluginArgs>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    let builder = DaemonBuilder::new(Plugins).interval(Duration::from_millis(500));
    let builder = match &cli.app.shm {
        None => builder.plugin(FileLock::new(&cli.app.lock)),
        Some(name) => match ShmLock::new(name) {
            Ok(lock) => builder.plugin(lock),
            Err(e) => {
                eprintln!("plugins: error: {e}");
                return e.exit_code().into();
            }
        },
    };
    builder
        .plugin(MemoryPlugin {
            every: cli.app.memory_every.max(Duration::from_millis(10)),
        })
        .args(&cli.daemon)
        .run()
}
