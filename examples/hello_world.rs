//! HelloWorld: a daemon whose `execute` logs a line every second.
//!
//! ```text
//! cargo run --example hello_world -- --log-file /tmp/hello.log -v
//! ```
//!
//! Stop it with Ctrl-C (or SIGTERM); send SIGUSR1 for a stats dump and SIGHUP
//! to reopen the log file.

use daemonic::event::ShutdownStarted;
use daemonic::{Daemon, DaemonBuilder, LoopContext};
use std::time::Duration;

struct HelloWorld;

impl Daemon for HelloWorld {
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
        ctx.log(format_args!("Hello World. Loop {}", ctx.iteration()));
    }
}

fn main() -> std::process::ExitCode {
    DaemonBuilder::new(HelloWorld)
        .name("hello_world")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Logs `Hello World. Loop N` every second.")
        .interval(Duration::from_secs(1))
        .on(|e: &mut ShutdownStarted| log::info!("goodbye ({})", e.reason))
        .main()
}
