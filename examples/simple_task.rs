//! SimpleTask: every 5th loop starts a background task (a child
//! process) that logs, sleeps 2 s and exits; the daemon logs each task's exit.
//!
//! ```text
//! cargo run --example simple_task -- --interval 0.2 -v
//! ```
//!
//! Its own flags (`--every`, `--task-secs`, `--stubborn`) show how a daemon
//! adds flags to the standard command line: it parses them with a
//! [`Program`], so its `--help` has its name, version and description like
//! a daemon that lets `DaemonBuilder::main` parse.

use clap::Args;
use daemonic::cli::{parse_duration, Program};
use daemonic::event::TaskExited;
use daemonic::task::{Task, TaskContext};
use daemonic::{BoxError, Daemon, DaemonBuilder, LoopContext};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The task: runs in its own process, forked by the daemon's fork server.
#[derive(Serialize, Deserialize)]
struct Sleepy {
    loop_number: u64,
    sleep: Duration,
    ignore_sigterm: bool,
}

#[daemonic::task]
impl Task for Sleepy {
    fn run(self, ctx: &mut TaskContext) -> Result<(), BoxError> {
        if self.ignore_sigterm {
            // SAFETY: ignoring a signal is always valid.
            unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        }
        ctx.log(format_args!(
            "task from loop {} running; sleeping {}s",
            self.loop_number,
            self.sleep.as_secs_f64()
        ));
        std::thread::sleep(self.sleep);
        ctx.log("task done");
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
struct TaskArgs {
    /// Start a task every N loops.
    #[arg(long, default_value_t = 5, value_name = "N")]
    every: u64,
    /// How long each task sleeps.
    #[arg(long, default_value = "2", value_name = "DURATION", value_parser = parse_duration)]
    task_secs: Duration,
    /// Tasks ignore SIGTERM (to watch the shutdown timeout kill them).
    #[arg(long)]
    stubborn: bool,
}

struct SimpleTask(TaskArgs);

impl Daemon for SimpleTask {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        let n = ctx.iteration();
        if n % self.0.every.max(1) != 0 {
            return;
        }
        let task = Sleepy {
            loop_number: n,
            sleep: self.0.task_secs,
            ignore_sigterm: self.0.stubborn,
        };
        match ctx.task(task) {
            Ok(handle) => ctx.log(format_args!("loop {n}: started task pid {}", handle.pid)),
            Err(e) => ctx.error(format_args!("loop {n}: cannot start task: {e}")),
        }
    }
}

fn main() -> std::process::ExitCode {
    let program = Program::new("simple_task")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Starts a background task (a child process) every few loops.");
    let cli = match program.parse::<TaskArgs>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    DaemonBuilder::new(SimpleTask(cli.app))
        .interval(Duration::from_secs(1))
        .on(|e: &mut TaskExited| {
            log::info!(
                "task pid {} exited after {:.1?}: {}",
                e.pid,
                e.runtime,
                e.status
            );
        })
        .args(&cli.daemon)
        .run()
}
