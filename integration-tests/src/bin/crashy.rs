//! A test daemon whose `execute` panics at a given tick (to exercise the
//! restart-after-fatal-error path and its restart-loop guard).

use clap::Args;
use daemonic::cli::Program;
use daemonic::event::{RestartStarting, ShutdownStarted};
use daemonic::{Daemon, DaemonBuilder, LoopContext};

#[derive(Debug, Clone, Args)]
struct CrashArgs {
    /// Panic in this tick (0: never).
    #[arg(long, default_value_t = 0)]
    panic_at: u64,
    /// Cancel the first restart (an `RestartStarting` listener).
    #[arg(long)]
    cancel_first_restart: bool,
}

struct Crashy(u64);

impl Daemon for Crashy {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        ctx.log(format_args!("tick {}", ctx.iteration()));
        if self.0 > 0 && ctx.iteration() == self.0 {
            panic!("crashy panics at tick {}", self.0);
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Program::new("crashy").parse::<CrashArgs>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    let cancelled = std::sync::atomic::AtomicBool::new(!cli.app.cancel_first_restart);
    DaemonBuilder::new(Crashy(cli.app.panic_at))
        .on(move |e: &mut RestartStarting| {
            if !cancelled.swap(true, std::sync::atomic::Ordering::SeqCst) {
                e.cancel();
            }
        })
        .on(|e: &mut ShutdownStarted| log::info!("shutdown event: {}", e.reason))
        .args(&cli.daemon)
        .run()
}
