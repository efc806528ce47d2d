//! A test daemon whose `execute` panics at a given tick (to exercise the
//! restart-after-fatal-error path and its restart-loop guard).

use clap::Args;
use daemonic::cli::Cli;
use daemonic::{Daemon, DaemonBuilder, LoopContext};

#[derive(Debug, Clone, Args)]
struct CrashArgs {
    /// Panic in this tick (0: never).
    #[arg(long, default_value_t = 0)]
    panic_at: u64,
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
    let cli = match daemonic::cli::parse::<Cli<CrashArgs>>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    DaemonBuilder::new(Crashy(cli.app.panic_at))
        .name("crashy")
        .args(&cli.daemon)
        .run()
}
