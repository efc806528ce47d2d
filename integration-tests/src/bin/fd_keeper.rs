//! A daemon that opens a file before `run()` and writes to it from
//! `execute`: with `--daemon`, the descriptor must survive the detach (only
//! descriptors inherited from the launching environment are closed).

use clap::Args;
use daemonic::cli::Program;
use daemonic::{Daemon, DaemonBuilder, LoopContext};
use std::io::Write;

#[derive(Debug, Clone, Args)]
struct KeeperArgs {
    /// The file opened before `run()` and written every tick.
    #[arg(long)]
    journal: std::path::PathBuf,
}

struct Keeper(std::fs::File);

impl Daemon for Keeper {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        match writeln!(self.0, "tick {}", ctx.iteration()) {
            Ok(()) => {}
            Err(e) => ctx.error(format_args!("cannot write the journal: {e}")),
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Program::new("fd_keeper").parse::<KeeperArgs>() {
        Ok(cli) => cli,
        Err(code) => return code.into(),
    };
    let journal = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cli.app.journal)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fd_keeper: cannot open {}: {e}", cli.app.journal.display());
            return std::process::ExitCode::from(73);
        }
    };
    DaemonBuilder::new(Keeper(journal))
        .interval(std::time::Duration::from_millis(50))
        .args(&cli.daemon)
        .run()
}
