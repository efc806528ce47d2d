//! The daemon: the [`Daemon`] trait users implement, its builder, the main
//! loop and the supervisor that runs everything.

mod builder;
mod main_loop;
pub(crate) mod pidfile;
mod priority;
pub(crate) mod privilege;
pub mod stats;
mod supervisor;
pub(crate) mod systemd;
pub(crate) mod timer;

pub use builder::{DaemonBuilder, DaemonHandle};
pub(crate) mod restart;
pub use main_loop::LoopContext;
pub use priority::LoopPriority;
pub(crate) use restart::RestartPolicy;
pub(crate) use supervisor::{EnsurePlugin, GetStats, RequestShutdown, Supervisor};

use crate::error::BoxError;
use crate::event::ShutdownReason;

/// A daemon: one `execute` method the framework calls every loop tick.
///
/// `execute` runs on the main loop's own thread (an actix arbiter), so a slow
/// tick never delays signal handling, logging or worker replies.
///
/// ```no_run
/// use daemonic::{Daemon, DaemonBuilder, LoopContext};
/// use std::time::Duration;
///
/// struct HelloWorld;
///
/// impl Daemon for HelloWorld {
///     fn execute(&mut self, ctx: &mut LoopContext<'_, Self>) {
///         ctx.log(format_args!("Hello World. Loop {}", ctx.iteration()));
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     DaemonBuilder::new(HelloWorld)
///         .interval(Duration::from_secs(1))
///         .main()
/// }
/// ```
pub trait Daemon: Send + Sized + 'static {
    /// Called every tick. Keep it short, or spawn futures with
    /// [`LoopContext::spawn`]; a tick that outlasts the interval is counted as
    /// an overrun and the next tick starts at once.
    fn execute(&mut self, ctx: &mut LoopContext<'_, Self>);

    /// Called once, on the main loop's thread, before the first tick. An error
    /// stops the daemon with exit code 70.
    fn initialize(&mut self, ctx: &mut LoopContext<'_, Self>) -> Result<(), BoxError> {
        let _ = ctx;
        Ok(())
    }

    /// Called once during a graceful shutdown, after the last tick.
    fn shutdown(&mut self, ctx: &mut LoopContext<'_, Self>, reason: &ShutdownReason) {
        let _ = (ctx, reason);
    }
}
