//! One daemon, two command-line paths: `DaemonBuilder::main` (with
//! `CLI_PATH=main`) or `Program::parse` then `DaemonBuilder::args` (with
//! `CLI_PATH=program`), with the same name, version and description, so a
//! test can compare what each prints. With `CLI_PATH=args_then_main`, a flag
//! of its own (`--once`: stop after the first tick) parsed by
//! `Program::parse`, then `args` and `main`.

use daemonic::cli::{NoArgs, Program};
use daemonic::{Daemon, DaemonBuilder, LoopContext};
use std::time::Duration;

const NAME: &str = "cli_paths";
const ABOUT: &str = "Ticks; parses its command line one of two ways.";

struct Ticker {
    once: bool,
}

impl Daemon for Ticker {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        ctx.log(format_args!("tick {}", ctx.iteration()));
        if self.once {
            ctx.shutdown();
        }
    }
}

#[derive(clap::Args)]
struct Once {
    /// Stop after the first tick.
    #[arg(long)]
    once: bool,
}

fn main() -> std::process::ExitCode {
    match std::env::var("CLI_PATH").as_deref() {
        Ok("main") => DaemonBuilder::new(Ticker { once: false })
            .name(NAME)
            .version(env!("CARGO_PKG_VERSION"))
            .about(ABOUT)
            .interval(Duration::from_secs(1))
            .main(),
        Ok("program") => {
            let program = Program::new(NAME)
                .version(env!("CARGO_PKG_VERSION"))
                .about(ABOUT);
            let cli = match program.parse::<NoArgs>() {
                Ok(cli) => cli,
                Err(code) => return code.into(),
            };
            // `args` before the builder's own settings: the command line
            // still wins.
            DaemonBuilder::new(Ticker { once: false })
                .args(&cli.daemon)
                .interval(Duration::from_secs(1))
                .run()
        }
        Ok("args_then_main") => {
            let cli = match Program::new(NAME).parse::<Once>() {
                Ok(cli) => cli,
                Err(code) => return code.into(),
            };
            // `main` after `args`: the command line is parsed already.
            DaemonBuilder::new(Ticker { once: cli.app.once })
                .args(&cli.daemon)
                .main()
        }
        _ => {
            eprintln!("{NAME}: set CLI_PATH to `main`, `program` or `args_then_main`");
            daemonic::ExitCode::Usage.into()
        }
    }
}
