//! # daemonic
//!
//! Robust, fast multiprocess daemons on [actix]: write one
//! [`execute`](Daemon::execute) method and the framework runs the main loop,
//! signals, events, logging, the command line and systemd integration.
//!
//! ```no_run
//! use daemonic::{Daemon, DaemonBuilder, LoopContext};
//!
//! struct HelloWorld;
//!
//! impl Daemon for HelloWorld {
//!     fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
//!         ctx.log(format_args!("Hello World. Loop {}", ctx.iteration()));
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     DaemonBuilder::new(HelloWorld).interval_secs(1.0).main()
//! }
//! ```
//!
//! The daemon is a tree of actors: a [`Supervisor`] starts the log watcher,
//! the signal handler, the plugins and the [`MainLoop`] (on its own thread),
//! and stops them in reverse order within the shutdown timeout.

#![warn(missing_docs)]

pub mod cli;
pub mod daemon;
mod error;
pub mod event;
pub mod log;
pub mod plugin;
pub mod signal;

pub use daemon::stats::{LoopStats, MemoryStats, Stats};
pub use daemon::{Daemon, DaemonBuilder, DaemonHandle, LoopContext, MainLoop, Supervisor};
pub use error::{BoxError, Error, ExitCode, Result};
pub use event::{Event, Events, ShutdownReason};
pub use log::{Level, Logger};

/// Re-exported so daemons need not depend on actix directly.
pub use actix;

/// The message of a caught panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
